/* Optional C speed-ups for dedupkit (a pure-numpy fallback exists for every function).
 *
 * collapse_ws(data, offsets, n, lower) -> (bytes text, bytes offsets, bytes nonascii)
 *   data:    buffer of UTF-8 bytes; offsets: buffer of n+1 int64 offsets into data.
 *   Collapses every run of ASCII whitespace (space, \t \n \v \f \r) to one space, trims both ends
 *   of each document, and (with lower=1) lower-cases ASCII letters. Non-ASCII bytes are copied
 *   unchanged, so UTF-8 stays valid. Returns the new data, n+1 int64 offsets, and one byte per
 *   document that is 1 where the document holds a non-ASCII byte (the caller lower-cases those
 *   with full Unicode rules; lower-casing never creates or removes ASCII whitespace, so the two
 *   steps commute).
 *
 *   On x86-64 CPUs with AVX2 the body runs 32 bytes at a time: a block without a removable
 *   whitespace byte is classified, lower-cased and stored with a handful of vector instructions;
 *   only blocks holding a whitespace run (or a leading space) are compacted byte by byte. The
 *   scalar loop handles tails and other CPUs, with the same result.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifndef _WIN32
#include <errno.h>
#include <unistd.h>
#endif
#define XXH_INLINE_ALL
#include "_vendor/xxhash/xxhash.h"  /* xxHash 0.8.2, BSD-2-Clause: see _vendor/xxhash/LICENSE */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DEDUPKIT_X86 1
#endif

static unsigned char WS[256];
static unsigned char LOWER[256];
static unsigned char IDENT[256];
static unsigned char WORD[256];  /* [0-9A-Za-z_]: a token byte of ASCII text */

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        WS[c] = (c == 32 || (c >= 9 && c <= 13));
        IDENT[c] = (unsigned char)c;
        LOWER[c] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : (unsigned char)c;
        WORD[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    }
}

/* The state carried across blocks of one document. */
typedef struct {
    int64_t w;          /* write position in dst */
    int prev_ws;        /* the last byte read was whitespace (or nothing was read yet) */
    unsigned nonascii;  /* some byte >= 0x80 was seen */
} ws_state;

/* Bytes [j, b) one at a time; branch-free: every byte is written, and the write position only
 * advances unless the byte is whitespace following whitespace (or the document start). */
static inline void collapse_scalar(const unsigned char *src, int64_t j, int64_t b, unsigned char *dst,
                                   const unsigned char *map, ws_state *st) {
    int64_t w = st->w;
    int prev = st->prev_ws;
    unsigned hi = 0;
    for (; j < b; j++) {
        unsigned char c = src[j];
        int ws = WS[c];
        hi |= c;
        dst[w] = ws ? (unsigned char)' ' : map[c];
        w += !(ws & prev);
        prev = ws;
    }
    st->w = w;
    st->prev_ws = prev;
    st->nonascii |= hi >> 7;
}

/* A block whose whitespace mask says some bytes go: write the kept lanes of the transformed
 * block (tmp) one by one. */
static inline int64_t compact_block(const unsigned char *tmp, int lanes, uint64_t drop, unsigned char *dst,
                                    int64_t w) {
    for (int k = 0; k < lanes; k++) {
        dst[w] = tmp[k];
        w += !((drop >> k) & 1);
    }
    return w;
}

#ifdef DEDUPKIT_X86
__attribute__((target("avx2")))
static int64_t collapse_avx2(const unsigned char *src, int64_t j, int64_t b, unsigned char *dst, int lower,
                             ws_state *st) {
    const __m256i space = _mm256_set1_epi8(' '), nine = _mm256_set1_epi8(9), four = _mm256_set1_epi8(4);
    const __m256i bigA = _mm256_set1_epi8('A'), twentyfive = _mm256_set1_epi8(25);
    const __m256i case_bit = _mm256_set1_epi8(lower ? 0x20 : 0);
    int64_t w = st->w;
    uint32_t prev = (uint32_t)st->prev_ws;
    uint32_t hi = 0;
    for (; j + 32 <= b; j += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(src + j));
        __m256i sp = _mm256_cmpeq_epi8(v, space);
        __m256i t = _mm256_sub_epi8(v, nine);
        __m256i ctl = _mm256_cmpeq_epi8(_mm256_min_epu8(t, four), t);          /* 9..13 */
        __m256i u = _mm256_sub_epi8(v, bigA);
        __m256i up = _mm256_cmpeq_epi8(_mm256_min_epu8(u, twentyfive), u);     /* 'A'..'Z' */
        v = _mm256_add_epi8(v, _mm256_and_si256(up, case_bit));
        v = _mm256_blendv_epi8(v, space, ctl);
        uint32_t wsm = (uint32_t)_mm256_movemask_epi8(_mm256_or_si256(sp, ctl));
        hi |= (uint32_t)_mm256_movemask_epi8(v);
        uint32_t drop = wsm & ((wsm << 1) | prev);
        if (!drop) {
            _mm256_storeu_si256((__m256i *)(dst + w), v);
            w += 32;
        } else {
            unsigned char tmp[32];
            _mm256_storeu_si256((__m256i *)tmp, v);
            w = compact_block(tmp, 32, drop, dst, w);
        }
        prev = wsm >> 31;
    }
    st->w = w;
    st->prev_ws = (int)prev;
    st->nonascii |= hi != 0;
    return j;
}
#endif

/* One document, bytes [j, b) of src, written at dst + w; returns the new write position and sets
 * *nonascii. simd: 2 = AVX2, 0 = scalar only (tests force each path). */
static inline int64_t collapse_one(const unsigned char *src, int64_t j, int64_t b, unsigned char *dst,
                                   int64_t w, int lower, int simd, unsigned char *nonascii) {
    ws_state st = {w, 1, 0};
#ifdef DEDUPKIT_X86
    if (simd == 2) j = collapse_avx2(src, j, b, dst, lower, &st);
#endif
    collapse_scalar(src, j, b, dst, lower ? LOWER : IDENT, &st);
    if (st.w > w && dst[st.w - 1] == ' ') st.w--;    /* a trailing space */
    *nonascii = (unsigned char)(st.nonascii != 0);
    return st.w;
}

static void collapse_all(const unsigned char *src, const int64_t *o, Py_ssize_t n, unsigned char *dst,
                         int64_t *no, unsigned char *flags, int lower, int simd) {
    int64_t w = 0;
    no[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        w = collapse_one(src, o[i], o[i + 1], dst, w, lower, simd, &flags[i]);
        no[i + 1] = w;
    }
}

static int SIMD_BEST;  /* set once at import: 2 = the CPU has AVX2, 0 = scalar */

static int detect_simd(void) {
#ifdef DEDUPKIT_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 2 : 0;
#else
    return 0;
#endif
}

/* The SIMD level a kernel runs at: what the caller asked for (tests force 0), at most the CPU's. */
static int pick_simd(int asked) {
    return asked < 0 || asked > SIMD_BEST ? SIMD_BEST : asked;
}

/* Check n+1 int64 offsets into data (non-decreasing, inside the buffer) and find the longest
 * document. On failure releases both buffers, raises ValueError and returns -1. */
static int check_offsets(Py_buffer *data, Py_buffer *offs, Py_ssize_t n, const char *fn, int64_t *longest) {
    const int64_t *o = (const int64_t *)offs->buf;
    int bad = n < 0 || offs->len < (Py_ssize_t)((n + 1) * sizeof(int64_t));
    if (!bad) bad = o[0] < 0 || o[n] > data->len;
    int64_t top = 0;
    for (Py_ssize_t i = 0; !bad && i < n; i++) {
        bad = o[i + 1] < o[i];
        if (o[i + 1] - o[i] > top) top = o[i + 1] - o[i];
    }
    if (bad) {
        PyBuffer_Release(data);
        PyBuffer_Release(offs);
        PyErr_Format(PyExc_ValueError, "%s: offsets out of range (need n+1 non-decreasing int64 offsets)", fn);
        return -1;
    }
    if (longest) *longest = top;
    return 0;
}

static PyObject *collapse_ws(PyObject *self, PyObject *args) {
    Py_buffer data, offs;
    Py_ssize_t n;
    int lower, simd = -1;
    if (!PyArg_ParseTuple(args, "y*y*np|i", &data, &offs, &n, &lower, &simd)) return NULL;
    simd = pick_simd(simd);
    if (check_offsets(&data, &offs, n, "collapse_ws", NULL) < 0) return NULL;
    const unsigned char *src = (const unsigned char *)data.buf;
    const int64_t *o = (const int64_t *)offs.buf;
    int64_t base = o[0], end = o[n];
    PyObject *out = PyBytes_FromStringAndSize(NULL, end - base);
    PyObject *newo = PyBytes_FromStringAndSize(NULL, (n + 1) * sizeof(int64_t));
    PyObject *flags = PyBytes_FromStringAndSize(NULL, n);
    if (!out || !newo || !flags) {
        Py_XDECREF(out); Py_XDECREF(newo); Py_XDECREF(flags);
        PyBuffer_Release(&data); PyBuffer_Release(&offs);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    int64_t *no = (int64_t *)PyBytes_AS_STRING(newo);
    unsigned char *fl = (unsigned char *)PyBytes_AS_STRING(flags);
    Py_BEGIN_ALLOW_THREADS
    collapse_all(src, o, n, dst, no, fl, lower, simd);
    Py_END_ALLOW_THREADS
    int64_t w = no[n];
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    if (_PyBytes_Resize(&out, w) < 0) { Py_DECREF(newo); Py_DECREF(flags); return NULL; }
    return Py_BuildValue("(NNN)", out, newo, flags);
}

/* utf8_lengths(data, offsets, n[, simd]) -> bytes of n int64: characters (code points) per
 * document of valid UTF-8, i.e. bytes that are not continuation bytes (10xxxxxx). */
#ifdef DEDUPKIT_X86
__attribute__((target("avx2,popcnt")))
static int64_t count_cont_avx2(const unsigned char *p, int64_t j, int64_t b, int64_t *cont) {
    const __m256i mask = _mm256_set1_epi8((char)0xC0), cb = _mm256_set1_epi8((char)0x80);
    int64_t c = 0;
    for (; j + 32 <= b; j += 32) {
        __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(p + j)), mask);
        c += __builtin_popcount((unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, cb)));
    }
    *cont += c;
    return j;
}
#endif

static PyObject *utf8_lengths(PyObject *self, PyObject *args) {
    Py_buffer data, offs;
    Py_ssize_t n;
    int simd = -1;
    if (!PyArg_ParseTuple(args, "y*y*n|i", &data, &offs, &n, &simd)) return NULL;
    simd = pick_simd(simd);
    if (check_offsets(&data, &offs, n, "utf8_lengths", NULL) < 0) return NULL;
    const int64_t *o = (const int64_t *)offs.buf;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * sizeof(int64_t));
    if (!out) { PyBuffer_Release(&data); PyBuffer_Release(&offs); return NULL; }
    int64_t *len = (int64_t *)PyBytes_AS_STRING(out);
    const unsigned char *p = (const unsigned char *)data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t j = o[i], b = o[i + 1], cont = 0;
#ifdef DEDUPKIT_X86
        if (simd == 2) j = count_cont_avx2(p, j, b, &cont);
#endif
        for (; j < b; j++) cont += (p[j] & 0xC0) == 0x80;
        len[i] = (o[i + 1] - o[i]) - cont;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return out;
}

/* hash_texts(data, offsets, n, mode[, simd]) -> (bytes hashes, bytes nonascii)
 *   xxh3-128 of every document: mode 0 over its bytes as they are; mode 1 after collapse_ws;
 *   mode 2 after collapse_ws with ASCII lower-casing. Each document is normalized into a scratch
 *   buffer that stays in cache and hashed from there, so no normalized copy of the batch is made.
 *   hashes: n pairs of uint64 (high word, low word), what the big-endian digest of Python's
 *   xxhash.xxh3_128 reads as. nonascii: one byte per document (modes 1 and 2; 0 in mode 0). */
static PyObject *hash_texts(PyObject *self, PyObject *args) {
    Py_buffer data, offs;
    Py_ssize_t n;
    int mode, simd = -1;
    if (!PyArg_ParseTuple(args, "y*y*ni|i", &data, &offs, &n, &mode, &simd)) return NULL;
    simd = pick_simd(simd);
    if (mode < 0 || mode > 2) {
        PyBuffer_Release(&data); PyBuffer_Release(&offs);
        PyErr_SetString(PyExc_ValueError, "hash_texts: mode must be 0, 1 or 2");
        return NULL;
    }
    int64_t longest = 0;
    if (check_offsets(&data, &offs, n, "hash_texts", &longest) < 0) return NULL;
    const int64_t *o = (const int64_t *)offs.buf;
    PyObject *hashes = PyBytes_FromStringAndSize(NULL, n * 2 * sizeof(uint64_t));
    PyObject *flags = PyBytes_FromStringAndSize(NULL, n);
    unsigned char *scratch = mode ? (unsigned char *)PyMem_RawMalloc((size_t)longest + 1) : NULL;
    if (!hashes || !flags || (mode && !scratch)) {
        Py_XDECREF(hashes); Py_XDECREF(flags); PyMem_RawFree(scratch);
        PyBuffer_Release(&data); PyBuffer_Release(&offs);
        return PyErr_NoMemory();
    }
    uint64_t *h = (uint64_t *)PyBytes_AS_STRING(hashes);
    unsigned char *fl = (unsigned char *)PyBytes_AS_STRING(flags);
    const unsigned char *src = (const unsigned char *)data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        XXH128_hash_t d;
        if (mode == 0) {
            d = XXH3_128bits(src + o[i], (size_t)(o[i + 1] - o[i]));
            fl[i] = 0;
        } else {
            int64_t w = collapse_one(src, o[i], o[i + 1], scratch, 0, mode == 2, simd, &fl[i]);
            d = XXH3_128bits(scratch, (size_t)w);
        }
        h[2 * i] = d.high64;
        h[2 * i + 1] = d.low64;
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offs);
    return Py_BuildValue("(NN)", hashes, flags);
}

static PyObject *simd_level(PyObject *self, PyObject *args) {
    return PyLong_FromLong(SIMD_BEST);
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

#ifdef DEDUPKIT_X86
/* One document's affine64 signature with AVX-512 (a CPU with AVX512F and AVX512DQ: vpmullq): the
 * permutations go 64 at a time, their minima, multipliers and offsets held in 24 registers over all
 * of the document's shingles (the generic loop loads and stores the whole row for every shingle).
 * Same uint64 arithmetic, same values. */
__attribute__((target("avx512f,avx512dq")))
static void affine_doc_avx512(uint64_t *row, const uint64_t *a, const uint64_t *b, Py_ssize_t p,
                              const uint64_t *h, int64_t m) {
    for (Py_ssize_t k0 = 0; k0 < p; k0 += 64) {
        __m512i acc[8], va[8], vb[8];
        __mmask8 mk[8];
        for (int q = 0; q < 8; q++) {  /* lanes past p are masked off (loaded as 0, never stored) */
            Py_ssize_t lanes = p - k0 - 8 * q;
            lanes = lanes < 0 ? 0 : (lanes > 8 ? 8 : lanes);
            mk[q] = (__mmask8)((1u << lanes) - 1);
            acc[q] = _mm512_set1_epi64(-1);
            va[q] = _mm512_maskz_loadu_epi64(mk[q], (const void *)(a + k0 + 8 * q));
            vb[q] = _mm512_maskz_loadu_epi64(mk[q], (const void *)(b + k0 + 8 * q));
        }
        for (int64_t j = 0; j < m; j++) {
            __m512i x = _mm512_set1_epi64((long long)fmix64(h[j]));
            for (int q = 0; q < 8; q++)
                acc[q] = _mm512_min_epu64(acc[q], _mm512_add_epi64(_mm512_mullo_epi64(va[q], x), vb[q]));
        }
        for (int q = 0; q < 8; q++) _mm512_mask_storeu_epi64((void *)(row + k0 + 8 * q), mk[q], acc[q]);
    }
}

static int HAS_AVX512DQ = -1;
#endif

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
        int wide = 0;
#ifdef DEDUPKIT_X86
        if (HAS_AVX512DQ < 0) {
            __builtin_cpu_init();
            HAS_AVX512DQ = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
        }
        wide = HAS_AVX512DQ && !legacy;
#endif
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t d = 0; d < n; d++) {
            uint64_t *row = sig + d * p;
#ifdef DEDUPKIT_X86
            if (wide) {
                affine_doc_avx512(row, a, b, p, h + o[d], o[d + 1] - o[d]);
                continue;
            }
#endif
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

/* word_shingles(data, offsets, n, ngram) -> (bytes hashes, bytes counts, bytes nonascii)
 *   The 64-bit word-shingle hashes of dedupkit.minhash for every ASCII document: lower-case, tokens
 *   are maximal runs of [0-9A-Za-z_], each token hashed with xxh3-64 (seed 0), and each run of
 *   ngram consecutive tokens (or all of a document's tokens, when it has fewer) combined exactly as
 *   dedupkit.minhash._combine does. hashes: uint64 values of all documents, concatenated in order;
 *   counts: int64 shingles per document. A document holding a byte >= 0x80 gets count 0 and
 *   nonascii 1: the caller shingles it with the Unicode (NFKC, RE2) path. */
static const uint64_t K0 = 0x9E3779B97F4A7C15ULL, K1 = 0xBF58476D1CE4E5B9ULL;

static inline uint64_t combine(const uint64_t *t, int64_t k) {
    uint64_t h = K0;
    for (int64_t j = 0; j < k; j++) {
        h = (h ^ t[j]) * K1;
        h ^= h >> 31;
    }
    h ^= (uint64_t)k;
    return fmix64(h);
}

/* Append v to a growing uint64 buffer; 0 when it cannot grow (out of memory). No GIL needed. */
static int push_u64(uint64_t **buf, size_t *cap, size_t *len, uint64_t v) {
    if (*len == *cap) {
        uint64_t *grown = (uint64_t *)PyMem_RawRealloc(*buf, *cap * 2 * sizeof(uint64_t));
        if (!grown) return 0;
        *buf = grown;
        *cap *= 2;
    }
    (*buf)[(*len)++] = v;
    return 1;
}

static inline uint32_t utf8_at(const unsigned char *p, int64_t j, int *len);

/* Code-point classes of the Unicode path (dedupkit.minhash fills the table from Arrow's own
 * kernels, for the code points a batch holds): */
#define CP_UNKNOWN 0    /* not classified yet */
#define CP_UNSAFE 1     /* NFKC may change it or its neighbours: the document takes Arrow's path */
#define CP_SEP 2        /* NFKC-stable, lower-case mapping to one code point, not a token character */
#define CP_WORD 3       /* the same, a token character (\p{L}, \p{N}, \p{M}, _) */
#define CP_MAP 4        /* NFKC replaces it, context-free, by safe code points: lower[c] is the
                         * offset in the map table of their count, then each lower-cased one with
                         * the top bit set for a token character */
#define N_CP 0x110000

static inline size_t put_utf8(unsigned char *d, uint32_t c) {
    if (c < 0x80) { d[0] = (unsigned char)c; return 1; }
    if (c < 0x800) { d[0] = (unsigned char)(0xC0 | (c >> 6)); d[1] = (unsigned char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        d[0] = (unsigned char)(0xE0 | (c >> 12)); d[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        d[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    d[0] = (unsigned char)(0xF0 | (c >> 18)); d[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    d[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F)); d[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* unknown_codepoints(data, offsets, n, state) -> bytes (uint32 per code point)
 *   The distinct non-ASCII code points of the documents whose class in state (N_CP bytes) is still
 *   CP_UNKNOWN, in first-seen order. */
static PyObject *unknown_codepoints(PyObject *self, PyObject *args) {
    Py_buffer data, offs, stb;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y*y*nw*", &data, &offs, &n, &stb)) return NULL;
    if (stb.len < N_CP) {
        PyBuffer_Release(&data); PyBuffer_Release(&offs); PyBuffer_Release(&stb);
        PyErr_SetString(PyExc_ValueError, "unknown_codepoints: state must hold 0x110000 bytes");
        return NULL;
    }
    if (check_offsets(&data, &offs, n, "unknown_codepoints", NULL) < 0) { PyBuffer_Release(&stb); return NULL; }
    const int64_t *o = (const int64_t *)offs.buf;
    const unsigned char *src = (const unsigned char *)data.buf;
    unsigned char *st = (unsigned char *)stb.buf;
    size_t cap = 256, w = 0;
    uint32_t *out = (uint32_t *)PyMem_RawMalloc(cap * sizeof(uint32_t));
    int oom = !out;
    Py_BEGIN_ALLOW_THREADS
    for (int64_t j = o[0]; j < o[n] && !oom;) {
        if (src[j] < 0x80) { j++; continue; }
        int len;
        uint32_t c = utf8_at(src, j, &len);
        j += len;
        if (c >= N_CP || st[c] != CP_UNKNOWN) continue;
        st[c] = 0xFF;  /* seen: listed once (the caller overwrites it with the class) */
        if (w == cap) {
            uint32_t *g = (uint32_t *)PyMem_RawRealloc(out, cap * 2 * sizeof(uint32_t));
            if (!g) { oom = 1; break; }
            out = g;
            cap *= 2;
        }
        out[w++] = c;
    }
    Py_END_ALLOW_THREADS
    for (size_t k = 0; k < w; k++) st[out[k]] = CP_UNKNOWN;
    PyBuffer_Release(&data); PyBuffer_Release(&offs); PyBuffer_Release(&stb);
    if (oom) { PyMem_RawFree(out); return PyErr_NoMemory(); }
    PyObject *res = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(w * sizeof(uint32_t)));
    PyMem_RawFree(out);
    return res;
}

/* word_shingles(data, offsets, n, ngram[, state, lower]) -> (hashes, counts, flags)
 *   Without the tables, as described above: a document holding a byte >= 0x80 gets flag 1. With
 *   state (N_CP bytes of CP_* classes) and lower (N_CP uint32: each code point's lower case), a
 *   non-ASCII document whose code points are all CP_SEP or CP_WORD is shingled here too: tokens
 *   are runs of token characters, lower-cased code point by code point and hashed as UTF-8, which
 *   is what Arrow's NFKC + utf8_lower + RE2 split give for such text (NFKC leaves it unchanged:
 *   every code point is stable and none combines with its neighbours). A document with another
 *   code point gets flag 1. */
static PyObject *word_shingles(PyObject *self, PyObject *args) {
    Py_buffer data, offs, stb = {0}, lwb = {0}, mpb = {0};
    Py_ssize_t n, ngram;
    if (!PyArg_ParseTuple(args, "y*y*nn|y*y*y*", &data, &offs, &n, &ngram, &stb, &lwb, &mpb)) return NULL;
    const unsigned char *cls = stb.buf && stb.len >= N_CP ? (const unsigned char *)stb.buf : NULL;
    const uint32_t *lw = lwb.buf && lwb.len >= (Py_ssize_t)(N_CP * sizeof(uint32_t)) ? (const uint32_t *)lwb.buf : NULL;
    const uint32_t *mp = mpb.buf ? (const uint32_t *)mpb.buf : NULL;
    Py_ssize_t nmp = mpb.buf ? mpb.len / 4 : 0;
    if (!lw) cls = NULL;
#define WS_RELEASE() do { PyBuffer_Release(&data); PyBuffer_Release(&offs); \
        if (stb.obj) PyBuffer_Release(&stb); if (lwb.obj) PyBuffer_Release(&lwb); \
        if (mpb.obj) PyBuffer_Release(&mpb); } while (0)
    if (ngram < 1) {
        WS_RELEASE();
        PyErr_SetString(PyExc_ValueError, "word_shingles: ngram must be at least 1");
        return NULL;
    }
    if (check_offsets(&data, &offs, n, "word_shingles", NULL) < 0) {
        if (stb.obj) PyBuffer_Release(&stb);
        if (lwb.obj) PyBuffer_Release(&lwb);
        return NULL;
    }
    const int64_t *o = (const int64_t *)offs.buf;
    const unsigned char *src = (const unsigned char *)data.buf;
    /* Memory stays proportional to the output, not to the longest document: the shingle buffer
     * grows as needed (starting near one shingle per five bytes), the last ngram token hashes sit
     * in a window written twice (at k and k + ngram, so any ngram of them are contiguous), and the
     * token buffer grows to the longest token. */
    size_t cap = (size_t)((o[n] - o[0]) / 5 + n + 16), tokcap = 256;
    uint64_t *out = (uint64_t *)PyMem_RawMalloc(cap * sizeof(uint64_t));
    uint64_t *win = (uint64_t *)PyMem_RawMalloc((size_t)(2 * ngram) * sizeof(uint64_t));
    unsigned char *tok = (unsigned char *)PyMem_RawMalloc(tokcap);
    PyObject *counts = PyBytes_FromStringAndSize(NULL, n * sizeof(int64_t));
    PyObject *flags = PyBytes_FromStringAndSize(NULL, n);
    if (!out || !win || !tok || !counts || !flags) {
        PyMem_RawFree(out); PyMem_RawFree(win); PyMem_RawFree(tok);
        Py_XDECREF(counts); Py_XDECREF(flags);
        WS_RELEASE();
        return PyErr_NoMemory();
    }
    int64_t *cnt = (int64_t *)PyBytes_AS_STRING(counts);
    unsigned char *fl = (unsigned char *)PyBytes_AS_STRING(flags);
    size_t w = 0;
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !oom; i++) {
        int64_t a = o[i], b = o[i + 1];
        unsigned hi = 0;
        for (int64_t j = a; j < b; j++) hi |= src[j];
        cnt[i] = 0;
        fl[i] = (unsigned char)(hi >> 7);
        if (fl[i] && !cls) continue;
        size_t w0 = w;
        int64_t nt = 0, slot = 0;
        size_t len = 0;
        if (!fl[i]) {  /* ASCII: the tight loop */
            for (int64_t j = a; j < b && !oom;) {
                if (!WORD[src[j]]) { j++; continue; }
                len = 0;
                for (; j < b && WORD[src[j]]; j++) {
                    if (len == tokcap) {
                        unsigned char *t2 = (unsigned char *)PyMem_RawRealloc(tok, tokcap * 2);
                        if (!t2) { oom = 1; break; }
                        tok = t2;
                        tokcap *= 2;
                    }
                    tok[len++] = LOWER[src[j]];
                }
                if (oom) break;
                uint64_t th = XXH3_64bits(tok, len);
                win[slot] = win[slot + ngram] = th;   /* after this, the oldest of the last ngram is at slot + 1 */
                slot = slot + 1 == ngram ? 0 : slot + 1;
                nt++;
                if (nt >= ngram && !push_u64(&out, &cap, &w, combine(win + slot, ngram))) oom = 1;
            }
            len = 0;
        }
        fl[i] = 0;
        for (int64_t j = a; j <= b && !oom && (hi >> 7);) {
            /* one code point (or the end of the document, which ends the last token) as units:
             * lower-cased code points, the top bit set for a token character */
            uint32_t one, *units = &one;
            int64_t nu = 1;
            int clen = 1;
            if (j == b) {
                one = ' ';
            } else if (src[j] < 0x80) {
                one = LOWER[src[j]] | ((uint32_t)WORD[src[j]] << 31);
            } else {
                uint32_t cp = utf8_at(src, j, &clen);
                unsigned char k = cp < N_CP ? cls[cp] : CP_UNSAFE;
                if (k == CP_WORD) one = lw[cp] | 0x80000000u;
                else if (k == CP_SEP) one = lw[cp];
                else if (k == CP_MAP && mp && lw[cp] < nmp && lw[cp] + 1 + mp[lw[cp]] <= nmp) {
                    units = (uint32_t *)mp + lw[cp] + 1;
                    nu = mp[lw[cp]];
                } else { fl[i] = 1; break; }
            }
            for (int64_t u = 0; u < nu && !oom; u++) {
                uint32_t lc = units[u] & 0x7FFFFFFFu;
                if (units[u] >> 31) {
                    if (len + 4 > tokcap) {
                        unsigned char *t2 = (unsigned char *)PyMem_RawRealloc(tok, tokcap * 2);
                        if (!t2) { oom = 1; break; }
                        tok = t2;
                        tokcap *= 2;
                    }
                    if (lc < 0x80) tok[len++] = (unsigned char)lc; else len += put_utf8(tok + len, lc);
                } else if (len) {
                    uint64_t th = XXH3_64bits(tok, len);
                    len = 0;
                    win[slot] = win[slot + ngram] = th;
                    slot = slot + 1 == ngram ? 0 : slot + 1;
                    nt++;
                    if (nt >= ngram && !push_u64(&out, &cap, &w, combine(win + slot, ngram))) oom = 1;
                }
            }
            j += clen;
        }
        if (oom) break;
        if (fl[i]) { w = w0; continue; }  /* a code point Arrow must normalise: its path redoes all */
        if (nt == 0) continue;
        if (nt < ngram) {  /* fewer tokens than one n-gram: one shingle of them all */
            if (!push_u64(&out, &cap, &w, combine(win, nt))) oom = 1;
            cnt[i] = 1;
        } else {
            cnt[i] = nt - ngram + 1;
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(win); PyMem_RawFree(tok);
    WS_RELEASE();
#undef WS_RELEASE
    if (oom) {
        PyMem_RawFree(out);
        Py_DECREF(counts); Py_DECREF(flags);
        return PyErr_NoMemory();
    }
    PyObject *hashes = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(w * sizeof(uint64_t)));
    PyMem_RawFree(out);
    if (!hashes) { Py_DECREF(counts); Py_DECREF(flags); return NULL; }
    return Py_BuildValue("(NNN)", hashes, counts, flags);
}

/* char_shingles(data, offsets, n, k) -> (bytes hashes, bytes counts)
 *   The char-shingle hashes of dedupkit.minhash for documents already NFKC-normalised and
 *   lower-cased (the caller runs Arrow's kernels): every run of Unicode whitespace (the code points
 *   for which Python's str.isspace() is true) becomes one space, both ends are trimmed, and each
 *   window of k consecutive code points is hashed with xxh3-64 of its UTF-8 bytes. A document of
 *   fewer than k code points (but at least one) is one shingle; an empty one has none.
 *   hashes: uint64, all documents concatenated; counts: int64 per document. */
static inline int uni_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

/* Decode one UTF-8 code point at p[j] (valid UTF-8: the input comes from Arrow strings). */
static inline uint32_t utf8_at(const unsigned char *p, int64_t j, int *len) {
    unsigned char c = p[j];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((uint32_t)(c & 0x1F) << 6) | (p[j + 1] & 0x3F); }
    if (c < 0xF0) { *len = 3; return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(p[j + 1] & 0x3F) << 6) | (p[j + 2] & 0x3F); }
    *len = 4;
    return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(p[j + 1] & 0x3F) << 12) | ((uint32_t)(p[j + 2] & 0x3F) << 6) |
           (p[j + 3] & 0x3F);
}

static PyObject *char_shingles(PyObject *self, PyObject *args) {
    Py_buffer data, offs;
    Py_ssize_t n, k;
    int64_t longest = 0;
    if (!PyArg_ParseTuple(args, "y*y*nn", &data, &offs, &n, &k)) return NULL;
    if (k < 1) {
        PyBuffer_Release(&data); PyBuffer_Release(&offs);
        PyErr_SetString(PyExc_ValueError, "char_shingles: k must be at least 1");
        return NULL;
    }
    if (check_offsets(&data, &offs, n, "char_shingles", &longest) < 0) return NULL;
    const int64_t *o = (const int64_t *)offs.buf;
    const unsigned char *src = (const unsigned char *)data.buf;
    size_t cap = (size_t)((o[n] - o[0]) + n + 16), w = 0;
    uint64_t *out = (uint64_t *)PyMem_RawMalloc(cap * sizeof(uint64_t));
    unsigned char *buf = (unsigned char *)PyMem_RawMalloc((size_t)longest + 1);
    int64_t *cps = (int64_t *)PyMem_RawMalloc(((size_t)longest + 2) * sizeof(int64_t));
    PyObject *counts = PyBytes_FromStringAndSize(NULL, n * sizeof(int64_t));
    if (!out || !buf || !cps || !counts) {
        PyMem_RawFree(out); PyMem_RawFree(buf); PyMem_RawFree(cps); Py_XDECREF(counts);
        PyBuffer_Release(&data); PyBuffer_Release(&offs);
        return PyErr_NoMemory();
    }
    int64_t *cnt = (int64_t *)PyBytes_AS_STRING(counts);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        /* collapse + trim into buf, recording each code point's byte start in cps */
        int64_t blen = 0, ncp = 0;
        int pending = 0;  /* a whitespace run was seen after some text */
        for (int64_t j = o[i]; j < o[i + 1];) {
            int len;
            uint32_t c = utf8_at(src, j, &len);
            if (uni_space(c)) { pending = ncp > 0; j += len; continue; }
            if (pending) { cps[ncp++] = blen; buf[blen++] = ' '; pending = 0; }
            cps[ncp++] = blen;
            memcpy(buf + blen, src + j, (size_t)len);
            blen += len;
            j += len;
        }
        cps[ncp] = blen;
        if (ncp == 0) { cnt[i] = 0; continue; }
        if (ncp < k) { out[w++] = XXH3_64bits(buf, (size_t)blen); cnt[i] = 1; continue; }
        for (int64_t s = 0; s + k <= ncp; s++)
            out[w++] = XXH3_64bits(buf + cps[s], (size_t)(cps[s + k] - cps[s]));
        cnt[i] = ncp - k + 1;
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(buf); PyMem_RawFree(cps);
    PyObject *hashes = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(w * sizeof(uint64_t)));
    PyMem_RawFree(out);
    PyBuffer_Release(&data); PyBuffer_Release(&offs);
    if (!hashes) { Py_DECREF(counts); return NULL; }
    return Py_BuildValue("(NN)", hashes, counts);
}

/* set_intersections(hashes, offsets, pairs) -> bytes (int64 per pair)
 *   hashes: uint64 sets, each sorted ascending without repeats, concatenated; offsets: int64, one
 *   more than the sets; pairs: int64 (m, 2) set indices. Returns |A & B| of every pair, by a merge
 *   of the two sorted runs (a galloping search when one set is 16x smaller than the other). */
static inline int64_t lower_bound_u64(const uint64_t *x, int64_t lo, int64_t hi, uint64_t v) {
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (x[mid] < v) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static PyObject *set_intersections(PyObject *self, PyObject *args) {
    Py_buffer hs, offs, pb;
    if (!PyArg_ParseTuple(args, "y*y*y*", &hs, &offs, &pb)) return NULL;
    Py_ssize_t nsets = offs.len / 8 - 1, m = pb.len / 16, nh = hs.len / 8;
    const int64_t *o = (const int64_t *)offs.buf;
    const int64_t *p = (const int64_t *)pb.buf;
    const uint64_t *h = (const uint64_t *)hs.buf;
    PyObject *res = NULL;
    int bad = nsets < 0 || (nsets >= 0 && (o[0] < 0 || o[nsets] > nh));
    for (Py_ssize_t i = 0; !bad && i < nsets; i++) bad = o[i] > o[i + 1];
    for (Py_ssize_t i = 0; !bad && i < 2 * m; i++) bad = p[i] < 0 || p[i] >= nsets;
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "set_intersections: inconsistent offsets or pair indices");
        goto done;
    }
    res = PyBytes_FromStringAndSize(NULL, m * 8);
    if (!res) goto done;
    {
        int64_t *out = (int64_t *)PyBytes_AS_STRING(res);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t q = 0; q < m; q++) {
            int64_t a = o[p[2 * q]], ae = o[p[2 * q] + 1], b = o[p[2 * q + 1]], be = o[p[2 * q + 1] + 1];
            if (ae - a > be - b) { int64_t t = a; a = b; b = t; t = ae; ae = be; be = t; }
            int64_t c = 0;
            if ((ae - a) * 16 < (be - b)) {
                for (; a < ae && b < be; a++) {
                    b = lower_bound_u64(h, b, be, h[a]);
                    if (b < be && h[b] == h[a]) { c++; b++; }
                }
            } else {
                while (a < ae && b < be) {
                    uint64_t x = h[a], y = h[b];
                    c += x == y;
                    a += x <= y;
                    b += y <= x;
                }
            }
            out[q] = c;
        }
        Py_END_ALLOW_THREADS
    }
done:
    PyBuffer_Release(&hs); PyBuffer_Release(&offs); PyBuffer_Release(&pb);
    return res;
}

/* greedy_centres(indptr, indices, order, n) -> (bytes claim, bytes via)
 *   Greedy centre clustering of an undirected graph in CSR form (indptr: int64 n+1, indices:
 *   int64, both directions of every edge present): nodes are visited in `order` (int64, the keep
 *   priority, best first); a node not yet claimed becomes a centre and claims every neighbour not
 *   yet claimed. claim[v]: the centre that claimed v, -1 for centres and untouched nodes; via[v]:
 *   the CSR position of the claiming edge (-1 likewise). Claims never follow more than one edge,
 *   so every claimed node is a direct neighbour of its centre. */
static PyObject *greedy_centres(PyObject *self, PyObject *args) {
    Py_buffer ip, ix, ob;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y*y*y*n", &ip, &ix, &ob, &n)) return NULL;
    PyObject *claim_b = NULL, *via_b = NULL, *res = NULL;
    const int64_t *indptr = (const int64_t *)ip.buf, *indices = (const int64_t *)ix.buf,
                  *order = (const int64_t *)ob.buf;
    Py_ssize_t ne = ix.len / 8, no = ob.len / 8;
    int bad = n < 0 || ip.len < (n + 1) * 8 || (n >= 0 && (indptr[0] != 0 || indptr[n] > ne));
    for (Py_ssize_t i = 0; !bad && i < n; i++) bad = indptr[i] > indptr[i + 1];
    for (Py_ssize_t i = 0; !bad && i < ne; i++) bad = indices[i] < 0 || indices[i] >= n;
    for (Py_ssize_t i = 0; !bad && i < no; i++) bad = order[i] < 0 || order[i] >= n;
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "greedy_centres: inconsistent CSR arrays or order");
        goto done;
    }
    claim_b = PyBytes_FromStringAndSize(NULL, n * 8);
    via_b = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!claim_b || !via_b) goto done;
    {
        int64_t *claim = (int64_t *)PyBytes_AS_STRING(claim_b), *via = (int64_t *)PyBytes_AS_STRING(via_b);
        unsigned char *seen = (unsigned char *)PyMem_RawCalloc((size_t)n + 1, 1);
        if (!seen) { PyErr_NoMemory(); goto done; }
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) { claim[i] = -1; via[i] = -1; }
        for (Py_ssize_t t = 0; t < no; t++) {
            int64_t u = order[t];
            if (seen[u]) continue;
            seen[u] = 1;
            for (int64_t e = indptr[u]; e < indptr[u + 1]; e++) {
                int64_t v = indices[e];
                if (!seen[v]) { seen[v] = 1; claim[v] = u; via[v] = e; }
            }
        }
        Py_END_ALLOW_THREADS
        PyMem_RawFree(seen);
    }
    res = Py_BuildValue("(OO)", claim_b, via_b);
done:
    Py_XDECREF(claim_b); Py_XDECREF(via_b);
    PyBuffer_Release(&ip); PyBuffer_Release(&ix); PyBuffer_Release(&ob);
    return res;
}

/* sort_unique_runs(hashes, offsets, n) -> (bytes values, bytes counts)
 *   For each of the n runs hashes[offsets[i]:offsets[i+1]] (uint64), its distinct values in
 *   ascending order, concatenated; counts: int64 per run. Runs are sorted one at a time (each fits
 *   in cache): insertion sort for short runs, else an LSD radix sort on bytes that skips a byte
 *   position where every value has the same byte. */
static inline void insertion_u64(uint64_t *a, int64_t n) {
    for (int64_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        int64_t j = i - 1;
        while (j >= 0 && a[j] > v) { a[j + 1] = a[j]; j--; }
        a[j + 1] = v;
    }
}

static void lsd_radix_u64(uint64_t *a, uint64_t *tmp, int64_t n) {
    uint64_t *src = a, *dst = tmp;
    for (int shift = 0; shift < 64; shift += 8) {
        int64_t cnt[256];
        memset(cnt, 0, sizeof(cnt));
        for (int64_t i = 0; i < n; i++) cnt[(src[i] >> shift) & 255]++;
        if (cnt[(src[0] >> shift) & 255] == n) continue;  /* one bucket: this byte is already in order */
        int64_t pos = 0;
        for (int b = 0; b < 256; b++) { int64_t c = cnt[b]; cnt[b] = pos; pos += c; }
        for (int64_t i = 0; i < n; i++) dst[cnt[(src[i] >> shift) & 255]++] = src[i];
        uint64_t *t = src; src = dst; dst = t;
    }
    if (src != a) memcpy(a, src, (size_t)n * sizeof(uint64_t));
}

/* Shingle hashes are uniform: one MSD pass on the highest byte that is not zero in every value
 * (the top byte, or lower for values that were shifted down) leaves buckets of a few values, each
 * finished by insertion sort (an LSD radix sort for a bucket that is not small). */
static void sort_run_u64(uint64_t *a, uint64_t *tmp, int64_t n) {
    if (n < 48) { insertion_u64(a, n); return; }
    uint64_t any = 0;
    for (int64_t i = 0; i < n; i++) any |= a[i];
    int top = 56;
    while (top > 0 && (any >> top) == 0) top -= 8;
    int64_t cnt[257];
    memset(cnt, 0, sizeof(cnt));
    for (int64_t i = 0; i < n; i++) cnt[((a[i] >> top) & 255) + 1]++;
    for (int b = 0; b < 256; b++) cnt[b + 1] += cnt[b];
    int64_t pos[256];
    memcpy(pos, cnt, sizeof(pos));
    for (int64_t i = 0; i < n; i++) tmp[pos[(a[i] >> top) & 255]++] = a[i];
    for (int b = 0; b < 256; b++) {
        int64_t s0 = cnt[b], len = cnt[b + 1] - cnt[b];
        if (len < 48) insertion_u64(tmp + s0, len);
        else lsd_radix_u64(tmp + s0, a + s0, len);
    }
    memcpy(a, tmp, (size_t)n * sizeof(uint64_t));
}

static PyObject *sort_unique_runs(PyObject *self, PyObject *args) {
    Py_buffer hs, offs;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y*y*n", &hs, &offs, &n)) return NULL;
    const int64_t *o = (const int64_t *)offs.buf;
    Py_ssize_t nh = hs.len / 8;
    int64_t longest = 0;
    int bad = n < 0 || offs.len < (n + 1) * 8 || (n >= 0 && (o[0] < 0 || o[n] > nh));
    for (Py_ssize_t i = 0; !bad && i < n; i++) {
        bad = o[i] > o[i + 1];
        if (o[i + 1] - o[i] > longest) longest = o[i + 1] - o[i];
    }
    if (bad) {
        PyBuffer_Release(&hs); PyBuffer_Release(&offs);
        PyErr_SetString(PyExc_ValueError, "sort_unique_runs: offsets out of range");
        return NULL;
    }
    int64_t total = n > 0 ? o[n] - o[0] : 0;
    uint64_t *out = (uint64_t *)PyMem_RawMalloc(((size_t)total + 1) * sizeof(uint64_t));
    uint64_t *tmp = (uint64_t *)PyMem_RawMalloc(((size_t)longest + 1) * sizeof(uint64_t));
    PyObject *counts = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!out || !tmp || !counts) {
        PyMem_RawFree(out); PyMem_RawFree(tmp); Py_XDECREF(counts);
        PyBuffer_Release(&hs); PyBuffer_Release(&offs);
        return PyErr_NoMemory();
    }
    int64_t *cnt = (int64_t *)PyBytes_AS_STRING(counts);
    const uint64_t *h = (const uint64_t *)hs.buf;
    int64_t w = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t len = o[i + 1] - o[i];
        uint64_t *run = out + w;
        memcpy(run, h + o[i], (size_t)len * sizeof(uint64_t));
        sort_run_u64(run, tmp, len);
        int64_t k = 0;
        for (int64_t j = 0; j < len; j++)
            if (k == 0 || run[j] != run[k - 1]) run[k++] = run[j];
        cnt[i] = k;
        w += k;
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(tmp);
    PyObject *vals = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(w * 8));
    PyMem_RawFree(out);
    PyBuffer_Release(&hs); PyBuffer_Release(&offs);
    if (!vals) { Py_DECREF(counts); return NULL; }
    return Py_BuildValue("(NN)", vals, counts);
}

/* pread_runs(fd, base, itemsize, starts, lens) -> bytes
 *   The runs of items [starts[i], starts[i] + lens[i]) of a file whose items begin at byte `base`
 *   (a .npy file's data), concatenated, read with pread(2): unlike a memory map, the pages read do
 *   not become part of the process's resident memory (a map's fault-around made every page near a
 *   touched set resident). Runs that follow each other in the file are read in one call. */
static PyObject *pread_runs(PyObject *self, PyObject *args) {
    int fd;
    long long base;
    Py_ssize_t isz;
    Py_buffer st, ln;
    if (!PyArg_ParseTuple(args, "iLny*y*", &fd, &base, &isz, &st, &ln)) return NULL;
    Py_ssize_t m = st.len / 8;
    const int64_t *a = (const int64_t *)st.buf, *l = (const int64_t *)ln.buf;
    int64_t total = 0;
    int bad = isz <= 0 || base < 0 || ln.len / 8 != m;
    for (Py_ssize_t i = 0; !bad && i < m; i++) {
        bad = a[i] < 0 || l[i] < 0;
        total += l[i];
    }
    PyObject *out = NULL;
#ifdef _WIN32
    PyErr_SetString(PyExc_NotImplementedError, "pread_runs: no pread on Windows");
#else
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "pread_runs: runs out of range");
    } else if ((out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(total * isz)))) {
        char *d = PyBytes_AS_STRING(out);
        int err = 0, eof = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < m && !err && !eof;) {
            /* one read for a stretch of runs that are contiguous in the file */
            int64_t start = a[i], len = l[i];
            Py_ssize_t j = i + 1;
            while (j < m && a[j] == start + len) len += l[j++];
            size_t want = (size_t)(len * isz), got = 0;
            off_t off = (off_t)(base + start * isz);
            while (got < want) {
                ssize_t r = pread(fd, d + got, want - got, off + (off_t)got);
                if (r < 0) { if (errno == EINTR) continue; err = errno; break; }
                if (r == 0) { eof = 1; break; }
                got += (size_t)r;
            }
            d += want;
            i = j;
        }
        Py_END_ALLOW_THREADS
        if (err) {
            errno = err;
            Py_CLEAR(out);
            PyErr_SetFromErrno(PyExc_OSError);
        } else if (eof) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_ValueError, "pread_runs: runs out of range (the file ends before them)");
        }
    }
#endif
    PyBuffer_Release(&st); PyBuffer_Release(&ln);
    return out;
}

static PyMethodDef methods[] = {
    {"pread_runs", pread_runs, METH_VARARGS, "Concatenate runs of items of a file, read with pread."},
    {"minhash", minhash, METH_VARARGS, "MinHash signatures of concatenated shingle hashes."},
    {"collapse_ws", collapse_ws, METH_VARARGS,
     "Collapse ASCII whitespace runs, trim, optionally ASCII-lower; flags documents with non-ASCII bytes."},
    {"word_shingles", word_shingles, METH_VARARGS, "Word-shingle hashes of ASCII documents (dedupkit.minhash)."},
    {"unknown_codepoints", unknown_codepoints, METH_VARARGS, "Distinct non-ASCII code points not classified yet."},
    {"hash_texts", hash_texts, METH_VARARGS, "xxh3-128 of each document, raw or after collapse_ws."},
    {"utf8_lengths", utf8_lengths, METH_VARARGS, "Characters per document of UTF-8 text (int64 bytes)."},
    {"char_shingles", char_shingles, METH_VARARGS, "Char-shingle hashes of NFKC-lower-cased documents."},
    {"set_intersections", set_intersections, METH_VARARGS, "Sizes of the intersections of pairs of sorted sets."},
    {"greedy_centres", greedy_centres, METH_VARARGS, "Greedy centre clustering of a CSR graph in a given order."},
    {"sort_unique_runs", sort_unique_runs, METH_VARARGS, "Sorted distinct values of every run of a uint64 array."},
    {"simd_level", simd_level, METH_NOARGS, "2: AVX2, 0: scalar (what collapse_ws and hash_texts use)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    init_tables();
    SIMD_BEST = detect_simd();
    return PyModule_Create(&module);
}
