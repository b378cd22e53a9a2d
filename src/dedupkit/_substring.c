/* C kernels of the substring stage (dedupkit.stages.substring); a slower Python path exists.
 *
 * tokenize(data, offsets, n) -> (bytes tok_start, bytes tok_end, bytes counts)
 *   data: UTF-8 bytes; offsets: n+1 int64 offsets into data (one document per range).
 *   A token is either a maximal run of characters below U+0800 that are not ASCII whitespace
 *   (Latin, Greek, Cyrillic, Hebrew, Arabic letters, digits, punctuation and their combining
 *   marks), or one character at or above U+0800 (CJK ideographs, kana, Hangul, emoji: scripts
 *   written without spaces, where a character is the natural unit). Returns int64 start and end
 *   byte positions (positions in data, like the offsets) of every token, documents in order, and
 *   the int64 number of tokens of each document. Offsets always fall on character boundaries.
 *
 * window_hashes(data, tok_start, tok_end, counts, k) -> bytes
 *   For every document and every window of k consecutive tokens of it (count - k + 1 windows,
 *   none when the document has fewer than k tokens), the xxh3-128 hash of the window's bytes, from
 *   its first token's start to its last token's end (whitespace inside included), as two uint64
 *   (high, low) per window.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#define XXH_INLINE_ALL
#include "_vendor/xxhash/xxhash.h"  /* xxHash 0.8.2, BSD-2-Clause: see _vendor/xxhash/LICENSE */

static inline int is_ws(unsigned char c) { return c == 32 || (c >= 9 && c <= 13); }

static PyObject *tokenize(PyObject *self, PyObject *args) {
    Py_buffer data, offs;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y*y*n", &data, &offs, &n)) return NULL;
    const unsigned char *s = (const unsigned char *)data.buf;
    const int64_t *o = (const int64_t *)offs.buf;
    PyObject *res = NULL;
    int64_t total = 0;
    if (offs.len < (Py_ssize_t)((n + 1) * 8) || (n > 0 && (o[0] < 0 || o[n] > data.len))) {
        PyErr_SetString(PyExc_ValueError, "tokenize: offsets do not match the data");
        goto done;
    }
    /* a token starts at most every byte: size the output by the data length of the range */
    int64_t cap = n > 0 ? (o[n] - o[0]) + 1 : 1;
    int64_t *ts = (int64_t *)PyMem_Malloc(cap * 8), *te = (int64_t *)PyMem_Malloc(cap * 8);
    int64_t *cnt = (int64_t *)PyMem_Malloc((n > 0 ? n : 1) * 8);
    if (!ts || !te || !cnt) { PyErr_NoMemory(); PyMem_Free(ts); PyMem_Free(te); PyMem_Free(cnt); goto done; }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t d = 0; d < n; d++) {
        int64_t a = o[d], b = o[d + 1], before = total;
        int64_t j = a;
        int in_word = 0;
        while (j < b) {
            unsigned char c = s[j];
            if (c < 0x80) {
                if (is_ws(c)) {
                    if (in_word) { te[total - 1] = j; in_word = 0; }
                } else if (!in_word) {
                    ts[total++] = j; in_word = 1;
                }
                j++;
            } else if (c >= 0xE0) {  /* 3- or 4-byte character: a token of its own */
                int len = c >= 0xF0 ? 4 : 3;
                if (in_word) { te[total - 1] = j; in_word = 0; }
                int64_t e = j + 1;
                while (e < b && e < j + len && (s[e] & 0xC0) == 0x80) e++;
                ts[total] = j; te[total] = e; total++;
                j = e;
            } else {  /* 2-byte lead (or a stray continuation byte): part of a word */
                if (!in_word) { ts[total++] = j; in_word = 1; }
                j++;
                while (j < b && (s[j] & 0xC0) == 0x80) j++;
            }
        }
        if (in_word) te[total - 1] = b;
        cnt[d] = total - before;
    }
    Py_END_ALLOW_THREADS
    res = Py_BuildValue("(y#y#y#)", (const char *)ts, (Py_ssize_t)(total * 8), (const char *)te,
                        (Py_ssize_t)(total * 8), (const char *)cnt, (Py_ssize_t)(n * 8));
    PyMem_Free(ts); PyMem_Free(te); PyMem_Free(cnt);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return res;
}

static PyObject *window_hashes(PyObject *self, PyObject *args) {
    Py_buffer data, tsb, teb, cb;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "y*y*y*y*n", &data, &tsb, &teb, &cb, &k)) return NULL;
    PyObject *res = NULL;
    const unsigned char *s = (const unsigned char *)data.buf;
    const int64_t *ts = (const int64_t *)tsb.buf, *te = (const int64_t *)teb.buf, *cnt = (const int64_t *)cb.buf;
    Py_ssize_t n = cb.len / 8, ntok = tsb.len / 8;
    int64_t nwin = 0, total = 0;
    if (k < 1 || teb.len != tsb.len) { PyErr_SetString(PyExc_ValueError, "window_hashes: bad arguments"); goto done; }
    for (Py_ssize_t d = 0; d < n; d++) { total += cnt[d]; if (cnt[d] >= k) nwin += cnt[d] - k + 1; }
    if (total != ntok) { PyErr_SetString(PyExc_ValueError, "window_hashes: counts do not match tokens"); goto done; }
    res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(nwin * 16));
    if (!res) goto done;
    uint64_t *out = (uint64_t *)PyBytes_AS_STRING(res);
    Py_BEGIN_ALLOW_THREADS
    int64_t base = 0, w = 0;
    for (Py_ssize_t d = 0; d < n; d++) {
        int64_t c = cnt[d];
        for (int64_t t = 0; t + k <= c; t++) {
            int64_t a = ts[base + t], b = te[base + t + k - 1];
            XXH128_hash_t h = XXH3_128bits(s + a, (size_t)(b - a));
            out[2 * w] = h.high64;
            out[2 * w + 1] = h.low64;
            w++;
        }
        base += c;
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&tsb);
    PyBuffer_Release(&teb);
    PyBuffer_Release(&cb);
    return res;
}

static PyMethodDef methods[] = {
    {"tokenize", tokenize, METH_VARARGS, "Token start/end byte positions and per-document counts."},
    {"window_hashes", window_hashes, METH_VARARGS, "xxh3-128 of every window of k tokens."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_substring", NULL, -1, methods};

PyMODINIT_FUNC PyInit__substring(void) { return PyModule_Create(&module); }
