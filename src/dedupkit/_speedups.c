/* Optional C speed-ups for dedupkit (a pure-numpy fallback exists for every function).
 *
 * collapse_ws(data, offsets, n, lower) -> (bytes text, bytes offsets)
 *   data:    buffer of UTF-8 bytes; offsets: buffer of n+1 int64 offsets into data.
 *   Collapses every run of ASCII whitespace (space, \t \n \v \f \r) to one space, trims both ends
 *   of each document, and (with lower=1) lower-cases ASCII letters. Non-ASCII bytes are copied
 *   unchanged, so UTF-8 stays valid. Returns the new data and n+1 int64 offsets.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static unsigned char WS[256];
static unsigned char LOWER[256];
static unsigned char IDENT[256];

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        WS[c] = (c == 32 || (c >= 9 && c <= 13));
        IDENT[c] = (unsigned char)c;
        LOWER[c] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : (unsigned char)c;
    }
}

static PyObject *collapse_ws(PyObject *self, PyObject *args) {
    Py_buffer data, offs;
    Py_ssize_t n;
    int lower;
    if (!PyArg_ParseTuple(args, "y*y*np", &data, &offs, &n, &lower)) return NULL;
    if (offs.len < (Py_ssize_t)((n + 1) * sizeof(int64_t))) {
        PyBuffer_Release(&data); PyBuffer_Release(&offs);
        PyErr_SetString(PyExc_ValueError, "offsets buffer too short");
        return NULL;
    }
    const unsigned char *src = (const unsigned char *)data.buf;
    const int64_t *o = (const int64_t *)offs.buf;
    int64_t base = o[0], end = o[n];
    if (base < 0 || end > data.len || end < base) {
        PyBuffer_Release(&data); PyBuffer_Release(&offs);
        PyErr_SetString(PyExc_ValueError, "offsets out of range");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, end - base);
    PyObject *newo = PyBytes_FromStringAndSize(NULL, (n + 1) * sizeof(int64_t));
    if (!out || !newo) {
        Py_XDECREF(out); Py_XDECREF(newo);
        PyBuffer_Release(&data); PyBuffer_Release(&offs);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    int64_t *no = (int64_t *)PyBytes_AS_STRING(newo);
    int64_t w = 0;
    Py_BEGIN_ALLOW_THREADS
    no[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t j = o[i], b = o[i + 1];
        while (j < b && WS[src[j]]) j++;             /* leading whitespace */
        while (j < b) {
            int64_t k = j;
            const unsigned char *map = lower ? LOWER : IDENT;
            while (k < b) {                          /* a run of text, copied (and lowered) */
                unsigned char c = src[k];
                if (WS[c]) break;
                dst[w++] = map[c];
                k++;
            }
            j = k;
            while (j < b && WS[src[j]]) j++;         /* a run of whitespace */
            if (j < b) dst[w++] = ' ';               /* ...becomes one space unless trailing */
        }
        no[i + 1] = w;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    if (_PyBytes_Resize(&out, w) < 0) { Py_DECREF(newo); return NULL; }
    return Py_BuildValue("(NN)", out, newo);
}

static PyMethodDef methods[] = {
    {"collapse_ws", collapse_ws, METH_VARARGS, "Collapse ASCII whitespace runs, trim, optionally ASCII-lower."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    init_tables();
    return PyModule_Create(&module);
}
