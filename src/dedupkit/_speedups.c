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
    const unsigned char *map = lower ? LOWER : IDENT;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* Branch-free: every byte is written, and the write position only advances unless the byte
         * is whitespace following a space (or the document start, which drops leading space). */
        int64_t start = w;
        unsigned char prev = ' ';
        for (int64_t j = o[i], b = o[i + 1]; j < b; j++) {
            unsigned char c = src[j];
            unsigned char ws = WS[c];
            c = ws ? (unsigned char)' ' : map[c];
            dst[w] = c;
            w += !(ws & (prev == ' '));
            prev = ws ? (unsigned char)' ' : c;
        }
        if (w > start && dst[w - 1] == ' ') w--;    /* a trailing space */
        no[i + 1] = w;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    if (_PyBytes_Resize(&out, w) < 0) { Py_DECREF(newo); return NULL; }
    return Py_BuildValue("(NN)", out, newo);
}

static inline uint64_t fmix64(uint64_t h) {
    h ^= h >> 33; h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33; h *= 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 33);
}

/* The per-shingle update of one signature row, compiled for AVX-512, AVX2 and plain x86-64 and
 * picked at load time (GCC function multi-versioning), so one build runs anywhere. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define DEDUPKIT_CLONES __attribute__((target_clones("arch=skylake-avx512", "avx2", "default")))
#else
#define DEDUPKIT_CLONES
#endif

DEDUPKIT_CLONES
static void affine_update(uint64_t *restrict row, const uint64_t *restrict a, const uint64_t *restrict b,
                          Py_ssize_t p, uint64_t x) {
    for (Py_ssize_t k = 0; k < p; k++) {
        uint64_t v = a[k] * x + b[k];
        row[k] = v < row[k] ? v : row[k];
    }
}

DEDUPKIT_CLONES
static void legacy_update(uint64_t *restrict row, const uint64_t *restrict a, const uint64_t *restrict b,
                          Py_ssize_t p, uint64_t x) {
    const uint64_t M = (1ULL << 61) - 1, MAX32 = 0xFFFFFFFFULL;
    for (Py_ssize_t k = 0; k < p; k++) {
        uint64_t v = a[k] * x + b[k];
        v = (v & M) + (v >> 61);
        v = v >= M ? v - M : v;
        v &= MAX32;
        row[k] = v < row[k] ? v : row[k];
    }
}

/* minhash(hashes, offsets, n, a, b, p, legacy) -> bytearray of n*p uint64
 *   hashes: m uint64 shingle hashes, documents concatenated; offsets: n+1 int64 into hashes.
 *   a, b: p uint64 permutation parameters. Same arithmetic as dedupkit.minhash._permute
 *   (uint64 wrap-around, as numpy does it), so signatures equal datasketch's:
 *   legacy=0 (affine64): min over shingles of a * fmix64(h) + b;
 *   legacy=1: min of (((a * h + b) mod 2**64) mod (2**61 - 1)) & (2**32 - 1).
 *   A document without shingles keeps the empty value (2**64-1, or 2**32-1 for legacy). */
static PyObject *minhash(PyObject *self, PyObject *args) {
    Py_buffer hs, offs, ab, bb;
    Py_ssize_t n, p;
    int legacy;
    if (!PyArg_ParseTuple(args, "y*y*ny*y*np", &hs, &offs, &n, &ab, &bb, &p, &legacy)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t m = hs.len / 8;
    const int64_t *o = (const int64_t *)offs.buf;
    if (offs.len < (Py_ssize_t)((n + 1) * 8) || ab.len < p * 8 || bb.len < p * 8 || p <= 0 ||
        (n > 0 && (o[0] < 0 || o[n] > m))) {
        PyErr_SetString(PyExc_ValueError, "minhash: inconsistent buffer sizes");
        goto done;
    }
    out = PyByteArray_FromStringAndSize(NULL, n * p * 8);
    if (!out) goto done;
    {
        uint64_t *sig = (uint64_t *)PyByteArray_AS_STRING(out);
        const uint64_t *h = (const uint64_t *)hs.buf;
        const uint64_t *a = (const uint64_t *)ab.buf;
        const uint64_t *b = (const uint64_t *)bb.buf;
        const uint64_t MAX32 = 0xFFFFFFFFULL;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t d = 0; d < n; d++) {
            uint64_t *row = sig + d * p;
            for (Py_ssize_t k = 0; k < p; k++) row[k] = legacy ? MAX32 : UINT64_MAX;
            for (int64_t j = o[d]; j < o[d + 1]; j++) {
                if (legacy) legacy_update(row, a, b, p, h[j]);
                else affine_update(row, a, b, p, fmix64(h[j]));
            }
        }
        Py_END_ALLOW_THREADS
    }
done:
    PyBuffer_Release(&hs); PyBuffer_Release(&offs); PyBuffer_Release(&ab); PyBuffer_Release(&bb);
    return out;
}

static PyMethodDef methods[] = {
    {"minhash", minhash, METH_VARARGS, "MinHash signatures of concatenated shingle hashes."},
    {"collapse_ws", collapse_ws, METH_VARARGS, "Collapse ASCII whitespace runs, trim, optionally ASCII-lower."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    init_tables();
    return PyModule_Create(&module);
}
