/* Optional C kernel of `dedupkit decontaminate` (dedupkit.decontaminate has a pure-Python fallback
 * that gives the same values; tests compare them).
 *
 * ngram_scan(data, offsets, n, sizes, k0, pre, pre_log2, full, full_log2, emit_all)
 *     -> (bytes doc int64, bytes pos int64, bytes size int64, bytes key uint64, bytes prefix uint64,
 *         bytes tokens int64)
 *
 *   data: UTF-8 bytes; offsets: n+1 int64 offsets. Tokens are maximal runs of [0-9A-Za-z_] and of
 *   bytes >= 0x80 (the caller has already replaced every non-ASCII character that is not a letter,
 *   digit or mark by a space and lower-cased non-ASCII text, so a high byte is always part of a
 *   word). ASCII letters are lower-cased here; each token is hashed with xxh3-64 (seed 0).
 *
 *   The key of the w tokens starting at token i is dedupkit.minhash's word-shingle combination of
 *   their hashes (chain h = mix(h ^ t) from K0, then fmix64(h ^ w)), so one chain from token i gives
 *   the keys of every window size at once: a window of size w is the chain after w steps.
 *
 *   sizes: 65 bytes, sizes[w] != 0 for the window sizes wanted (1..64); k0: the prefix length, at
 *   most the smallest wanted size (smaller sizes are never returned).
 *   emit_all = 1 (building the index): every window of every wanted size is returned, with the key
 *     of its first k0 tokens in `prefix`.
 *   emit_all = 0 (scanning documents): the chain from token i stops as soon as the key of its first
 *     k0 tokens is not set in the bitmap `pre` (2**pre_log2 bits, indexed by the key's top bits): a
 *     position can only start a match if its k0-token prefix is the prefix of some indexed window.
 *     Past that filter, a window is returned when its key is set in the bitmap `full`. Both
 *     bitmaps may give false positives (the caller checks the keys exactly), never negatives.
 *   tokens: token count of every document.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#define XXH_INLINE_ALL
#include "_vendor/xxhash/xxhash.h"  /* xxHash 0.8.2, BSD-2-Clause: see _vendor/xxhash/LICENSE */

#define BLOCK 64  /* positions per prefetch block */

static unsigned char WORDB[256];
static unsigned char LOWERB[256];
static const uint64_t K0 = 0x9E3779B97F4A7C15ULL, K1 = 0xBF58476D1CE4E5B9ULL;

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        WORDB[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
        LOWERB[c] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : (unsigned char)c;
    }
}

static inline uint64_t fmix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 33);
}

static inline int bit_set(const unsigned char *bm, int lg, uint64_t key) {
    uint64_t i = key >> (64 - lg);
    return (bm[i >> 3] >> (i & 7)) & 1;
}

typedef struct {
    void *p;
    size_t len, cap, item;
} vec;

static int vec_init(vec *v, size_t item, size_t cap) {
    v->item = item; v->len = 0; v->cap = cap < 16 ? 16 : cap;
    v->p = PyMem_RawMalloc(v->cap * item);
    return v->p != NULL;
}

static void *vec_push(vec *v) {
    if (v->len == v->cap) {
        void *g = PyMem_RawRealloc(v->p, v->cap * 2 * v->item);
        if (!g) return NULL;
        v->p = g;
        v->cap *= 2;
    }
    return (char *)v->p + (v->len++) * v->item;
}

static PyObject *vec_bytes(vec *v) {
    PyObject *b = PyBytes_FromStringAndSize((const char *)v->p, (Py_ssize_t)(v->len * v->item));
    PyMem_RawFree(v->p);
    v->p = NULL;
    return b;
}

static PyObject *ngram_scan(PyObject *self, PyObject *args) {
    Py_buffer data, offs, sizes, pre, full;
    Py_ssize_t n, k0, pre_log2, full_log2;
    int emit_all;
    if (!PyArg_ParseTuple(args, "y*y*ny*ny*ny*np", &data, &offs, &n, &sizes, &k0, &pre, &pre_log2, &full,
                          &full_log2, &emit_all))
        return NULL;
    PyObject *result = NULL;
    vec vd = {0}, vp = {0}, vs = {0}, vk = {0}, vx = {0}, th = {0};
    unsigned char *tok = NULL;
    const char *err = NULL;
    if (n < 0 || offs.len < (Py_ssize_t)((n + 1) * sizeof(int64_t))) err = "offsets must hold n+1 int64 values";
    else if (sizes.len < 65) err = "sizes must be 65 bytes";
    else if (k0 < 1 || k0 > 64) err = "k0 must be from 1 to 64";
    else if (!emit_all && (pre_log2 < 3 || pre_log2 > 40 || full_log2 < 3 || full_log2 > 40 ||
                           pre.len < ((Py_ssize_t)1 << (pre_log2 - 3)) || full.len < ((Py_ssize_t)1 << (full_log2 - 3))))
        err = "bitmaps must hold 2**log2 bits, log2 from 3 to 40";
    if (!err) {
        const int64_t *o = (const int64_t *)offs.buf;
        for (Py_ssize_t i = 0; i < n && !err; i++)
            if (o[i] > o[i + 1] || o[i] < 0 || o[i + 1] > data.len) err = "offsets out of order or out of range";
    }
    if (err) {
        PyErr_Format(PyExc_ValueError, "ngram_scan: %s", err);
        goto done;
    }
    const int64_t *o = (const int64_t *)offs.buf;
    const unsigned char *src = (const unsigned char *)data.buf;
    const unsigned char *want = (const unsigned char *)sizes.buf;
    const unsigned char *pb = (const unsigned char *)pre.buf, *fb = (const unsigned char *)full.buf;
    int maxw = 0;
    for (int w = 1; w <= 64; w++) if (want[w] && w >= k0) maxw = w;
    PyObject *tokens = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    size_t tokcap = 256;
    tok = (unsigned char *)PyMem_RawMalloc(tokcap);
    if (!tokens || !tok || !vec_init(&vd, 8, 1024) || !vec_init(&vp, 8, 1024) || !vec_init(&vs, 8, 1024) ||
        !vec_init(&vk, 8, 1024) || !vec_init(&vx, 8, 1024) || !vec_init(&th, 8, 4096)) {
        Py_XDECREF(tokens);
        PyErr_NoMemory();
        goto done;
    }
    int64_t *ntok = (int64_t *)PyBytes_AS_STRING(tokens);
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t d = 0; d < n && !oom; d++) {
        int64_t a = o[d], b = o[d + 1];
        th.len = 0;
        for (int64_t j = a; j < b && !oom;) {
            if (!WORDB[src[j]]) { j++; continue; }
            size_t len = 0;
            for (; j < b && WORDB[src[j]]; j++) {
                if (len == tokcap) {
                    unsigned char *t2 = (unsigned char *)PyMem_RawRealloc(tok, tokcap * 2);
                    if (!t2) { oom = 1; break; }
                    tok = t2;
                    tokcap *= 2;
                }
                tok[len++] = LOWERB[src[j]];
            }
            if (oom) break;
            uint64_t *slot = (uint64_t *)vec_push(&th);
            if (!slot) { oom = 1; break; }
            *slot = XXH3_64bits(tok, len);
        }
        if (oom) break;
        int64_t nt = (int64_t)th.len;
        ntok[d] = nt;
        const uint64_t *t = (const uint64_t *)th.p;
        if (!emit_all) {
            /* Scanning: blocks of positions. First the k0-token prefix key of every position of
             * the block, prefetching its bitmap byte; then the test, so the cache misses of one
             * block overlap instead of stalling one position at a time. */
            for (int64_t b0 = 0; b0 + k0 <= nt && !oom; b0 += BLOCK) {
                int64_t b1 = b0 + BLOCK < nt - k0 + 1 ? b0 + BLOCK : nt - k0 + 1;
                uint64_t st[BLOCK], pk[BLOCK];
                for (int64_t i = b0; i < b1; i++) {
                    uint64_t h = K0;
                    for (int64_t j = 0; j < k0; j++) {
                        h = (h ^ t[i + j]) * K1;
                        h ^= h >> 31;
                    }
                    st[i - b0] = h;
                    pk[i - b0] = fmix(h ^ (uint64_t)k0);
                    __builtin_prefetch(pb + ((pk[i - b0] >> (64 - pre_log2)) >> 3));
                }
                for (int64_t i = b0; i < b1 && !oom; i++) {
                    uint64_t prefix = pk[i - b0];
                    if (!bit_set(pb, (int)pre_log2, prefix)) continue;
                    uint64_t h = st[i - b0];
                    int64_t lim = nt - i < maxw ? nt - i : maxw;
                    for (int64_t w = k0; w <= lim; w++) {
                        if (w > k0) {
                            h = (h ^ t[i + w - 1]) * K1;
                            h ^= h >> 31;
                        }
                        if (!want[w]) continue;
                        uint64_t key = w == k0 ? prefix : fmix(h ^ (uint64_t)w);
                        if (!bit_set(fb, (int)full_log2, key)) continue;
                        int64_t *pd = (int64_t *)vec_push(&vd), *pp = (int64_t *)vec_push(&vp), *ps = (int64_t *)vec_push(&vs);
                        uint64_t *pkk = (uint64_t *)vec_push(&vk), *px = (uint64_t *)vec_push(&vx);
                        if (!pd || !pp || !ps || !pkk || !px) { oom = 1; break; }
                        *pd = d; *pp = i; *ps = w; *pkk = key; *px = prefix;
                    }
                }
            }
            continue;
        }
        for (int64_t i = 0; i < nt && !oom; i++) {
            uint64_t h = K0, prefix = 0;
            int64_t lim = nt - i < maxw ? nt - i : maxw;
            for (int64_t j = 0; j < lim; j++) {
                h = (h ^ t[i + j]) * K1;
                h ^= h >> 31;
                int64_t w = j + 1;
                if (w == k0) {
                    prefix = fmix(h ^ (uint64_t)w);
                    if (!emit_all && !bit_set(pb, (int)pre_log2, prefix)) break;
                }
                if (w < k0 || !want[w]) continue;
                uint64_t key = w == k0 ? prefix : fmix(h ^ (uint64_t)w);
                if (!emit_all && !bit_set(fb, (int)full_log2, key)) continue;
                int64_t *pd = (int64_t *)vec_push(&vd), *pp = (int64_t *)vec_push(&vp), *ps = (int64_t *)vec_push(&vs);
                uint64_t *pk = (uint64_t *)vec_push(&vk), *px = (uint64_t *)vec_push(&vx);
                if (!pd || !pp || !ps || !pk || !px) { oom = 1; break; }
                *pd = d; *pp = i; *ps = w; *pk = key; *px = prefix;
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (oom) {
        Py_DECREF(tokens);
        PyErr_NoMemory();
        goto done;
    }
    {
        PyObject *bd = vec_bytes(&vd), *bp = vec_bytes(&vp), *bs = vec_bytes(&vs), *bk = vec_bytes(&vk),
                 *bx = vec_bytes(&vx);
        if (!bd || !bp || !bs || !bk || !bx) {
            Py_XDECREF(bd); Py_XDECREF(bp); Py_XDECREF(bs); Py_XDECREF(bk); Py_XDECREF(bx); Py_DECREF(tokens);
            goto done;
        }
        result = Py_BuildValue("(NNNNNN)", bd, bp, bs, bk, bx, tokens);
    }
done:
    PyMem_RawFree(vd.p); PyMem_RawFree(vp.p); PyMem_RawFree(vs.p); PyMem_RawFree(vk.p); PyMem_RawFree(vx.p);
    PyMem_RawFree(th.p); PyMem_RawFree(tok);
    PyBuffer_Release(&data); PyBuffer_Release(&offs); PyBuffer_Release(&sizes);
    PyBuffer_Release(&pre); PyBuffer_Release(&full);
    return result;
}

static PyMethodDef methods[] = {
    {"ngram_scan", ngram_scan, METH_VARARGS,
     "Word n-gram keys of several window sizes in one pass, filtered by two bitmaps (dedupkit.decontaminate)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_decon", NULL, -1, methods};

PyMODINIT_FUNC PyInit__decon(void) {
    init_tables();
    return PyModule_Create(&module);
}
