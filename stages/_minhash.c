/* MinHash signatures of a whole batch in one call (stages/minhash.py wraps it; tests compare it with
 * datasketch and with the numpy path of stages/minhash.py).
 *
 *     _minhash.signatures(texts, mode, ngram, char_ngram, hash, scheme, a, b, out)
 *     _minhash.span_signatures(buf, spans, docs, hash, scheme, a, b, out)   # shingles given as byte spans
 *     _minhash.hashes(buf, spans, hash, out)                                 # raw 32-bit shingle hashes
 *     _minhash.normalized(texts) -> [normalize_text(t).encode() for t in texts]
 *     _minhash.xxh64(data, seed=0) -> int
 *
 * `signatures` does, per text, what `normalize_text` + `shingles` + datasketch do in Python, without
 * building a Python object per shingle or a (shingles x num_perm) matrix:
 *
 *   1. normalise into one UTF-8 buffer: NFC (Python's unicodedata, called only for non-ASCII text,
 *      which returns the text itself when it is NFC already), then per code point the case folding
 *      of `str.casefold` (ASCII: lower case) and a word break for every character that is Unicode
 *      punctuation (category P*) after folding or that `str.split` treats as white space; words are
 *      joined by one space. The folding and the category of each non-ASCII code point are asked of
 *      Python once, on first sight, and cached for the process;
 *   2. shingles are spans of that buffer: word n-grams (a text of at most n words is one shingle),
 *      or character n-grams of the normalised text (`mode` 1, or 2 = per text when its mean "word"
 *      is over 20 characters);
 *   3. each span is hashed: SHA-1 (FIPS 180-4; first 4 digest bytes, little-endian, as datasketch's
 *      sha1_hash32) with the x86 SHA extensions (two messages interleaved) where the CPU has them,
 *      else eight messages at once in the lanes of a vector (AVX2, or SSE2 / NEON); messages over
 *      55 bytes (5% of article shingles) one at a time in plain C; or XXH64 (low 32 bits);
 *   4. the permutations are applied block by block (32 at a time, kept in registers) over the text's
 *      shingle hashes, keeping the minimum: "affine32" a*fmix32(h)+b mod 2^32; "legacy"
 *      ((a*h+b) mod 2^64) mod (2^61-1), low 32 bits. Rows of texts without shingles stay at the
 *      empty value 0xFFFFFFFF (datasketch's).
 *
 * The CPU paths are chosen at import (cpuid); `set_features` lets tests run the others.
 *
 * `a`, `b` are uint32 (affine32) or uint64 (legacy) buffers of num_perm values; `out` is a C-contiguous
 * (len(texts), num_perm) uint32 (affine32) or uint64 (legacy) buffer, overwritten.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#define HASH_SHA1 0
#define HASH_XXH64 1
#define SCHEME_AFFINE32 0
#define SCHEME_LEGACY 1
#define MODE_WORD 0
#define MODE_CHAR 1
#define MODE_AUTO 2
#define EMPTY32 0xFFFFFFFFu
#define MERSENNE ((1ULL << 61) - 1)
#define BLOCK 32 /* permutations per pass over a text's shingle hashes */

/* ---------------------------------------------------------------- byte order */

static inline uint32_t load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t load_le64(const uint8_t *p) {
    return (uint64_t)load_le32(p) | ((uint64_t)load_le32(p + 4) << 32);
}

static inline uint32_t bswap32(uint32_t x) {
    return (x >> 24) | ((x >> 8) & 0xFF00u) | ((x << 8) & 0xFF0000u) | (x << 24);
}

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* ---------------------------------------------------------------- SHA-1, portable (FIPS 180-4, 6.1) */

/* The 80 steps, written once for any word type through its operations (prefix##_ADD, _XOR, _AND, _OR,
 * _ROTL, _CONST): plain uint32_t here, eight lanes of AVX2 below. W is a 16-word ring: W[t] for t >= 16
 * is rotl(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16], 1), computed in place of W[t-16]. Each step adds into e
 * and rotates b; the next step takes the names one place on, (e, a, b, c, d), so five steps bring them
 * back and no variable is copied. */
#define SHA1_CH(O, b, c, d) O##_XOR(d, O##_AND(b, O##_XOR(c, d)))
#define SHA1_PARITY(O, b, c, d) O##_XOR(O##_XOR(b, c), d)
#define SHA1_MAJ(O, b, c, d) O##_OR(O##_AND(b, c), O##_AND(d, O##_OR(b, c)))
#define SHA1_W(O, t) ((t) < 16 ? w[(t) & 15] : (w[(t) & 15] = O##_ROTL(O##_XOR(O##_XOR(w[((t) - 3) & 15], \
    w[((t) - 8) & 15]), O##_XOR(w[((t) - 14) & 15], w[(t) & 15])), 1)))
#define SHA1_STEP(O, F, K, a, b, c, d, e, t) \
    e = O##_ADD(O##_ADD(e, O##_ROTL(a, 5)), O##_ADD(O##_ADD(F(O, b, c, d), O##_CONST(K)), SHA1_W(O, t))); \
    b = O##_ROTL(b, 30)
#define SHA1_FIVE(O, F, K, t) \
    SHA1_STEP(O, F, K, a, b, c, d, e, (t)); SHA1_STEP(O, F, K, e, a, b, c, d, (t) + 1); \
    SHA1_STEP(O, F, K, d, e, a, b, c, (t) + 2); SHA1_STEP(O, F, K, c, d, e, a, b, (t) + 3); \
    SHA1_STEP(O, F, K, b, c, d, e, a, (t) + 4)
#define SHA1_ROUNDS(O) \
    SHA1_FIVE(O, SHA1_CH, 0x5A827999u, 0); SHA1_FIVE(O, SHA1_CH, 0x5A827999u, 5); \
    SHA1_FIVE(O, SHA1_CH, 0x5A827999u, 10); SHA1_FIVE(O, SHA1_CH, 0x5A827999u, 15); \
    SHA1_FIVE(O, SHA1_PARITY, 0x6ED9EBA1u, 20); SHA1_FIVE(O, SHA1_PARITY, 0x6ED9EBA1u, 25); \
    SHA1_FIVE(O, SHA1_PARITY, 0x6ED9EBA1u, 30); SHA1_FIVE(O, SHA1_PARITY, 0x6ED9EBA1u, 35); \
    SHA1_FIVE(O, SHA1_MAJ, 0x8F1BBCDCu, 40); SHA1_FIVE(O, SHA1_MAJ, 0x8F1BBCDCu, 45); \
    SHA1_FIVE(O, SHA1_MAJ, 0x8F1BBCDCu, 50); SHA1_FIVE(O, SHA1_MAJ, 0x8F1BBCDCu, 55); \
    SHA1_FIVE(O, SHA1_PARITY, 0xCA62C1D6u, 60); SHA1_FIVE(O, SHA1_PARITY, 0xCA62C1D6u, 65); \
    SHA1_FIVE(O, SHA1_PARITY, 0xCA62C1D6u, 70); SHA1_FIVE(O, SHA1_PARITY, 0xCA62C1D6u, 75)

#define U32_ADD(x, y) ((x) + (y))
#define U32_XOR(x, y) ((x) ^ (y))
#define U32_AND(x, y) ((x) & (y))
#define U32_OR(x, y) ((x) | (y))
#define U32_ROTL(x, r) rotl32(x, r)
#define U32_CONST(k) (k)

static void sha1_compress(uint32_t st[5], const uint8_t *p) {
    uint32_t w[16];
    for (int t = 0; t < 16; t++) w[t] = load_be32(p + 4 * t);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4];
    SHA1_ROUNDS(U32);
    st[0] += a, st[1] += b, st[2] += c, st[3] += d, st[4] += e;
}

/* The padded last one or two blocks of a message whose final `rest` (< 64) bytes are `p`; returns how
 * many blocks (1 or 2) were written to `tail` (1 when rest <= 55). */
static int sha1_tail(uint8_t *tail, const uint8_t *p, size_t rest, uint64_t total) {
    int blocks = rest + 9 <= 64 ? 1 : 2;
    memcpy(tail, p, rest);
    memset(tail + rest, 0, 64 * blocks - rest);
    tail[rest] = 0x80;
    uint64_t bits = total * 8;
    for (int i = 0; i < 8; i++) tail[64 * blocks - 1 - i] = (uint8_t)(bits >> (8 * i));
    return blocks;
}

static uint32_t sha1_32_portable(const uint8_t *p, size_t n) {
    uint32_t st[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    size_t full = n / 64;
    for (size_t i = 0; i < full; i++) sha1_compress(st, p + 64 * i);
    uint8_t tail[128];
    int blocks = sha1_tail(tail, p + 64 * full, n - 64 * full, n);
    for (int i = 0; i < blocks; i++) sha1_compress(st, tail + 64 * i);
    return bswap32(st[0]);  /* digest bytes 0..3 are st[0] big-endian; read little-endian */
}

/* ---------------------------------------------------------------- SHA-1, eight messages at once */

/* Eight messages of at most 55 bytes (one block each) in the eight 32-bit lanes of a GCC/Clang vector:
 * AVX2 where the CPU has it (the function is compiled twice), two SSE2 or NEON registers elsewhere.
 * For CPUs without SHA instructions (Intel before Ice Lake, ARM here). */
typedef uint32_t v8u32 __attribute__((vector_size(32)));
#define V8_ADD(x, y) ((x) + (y))
#define V8_XOR(x, y) ((x) ^ (y))
#define V8_AND(x, y) ((x) & (y))
#define V8_OR(x, y) ((x) | (y))
#define V8_ROTL(x, r) (((x) << (r)) | ((x) >> (32 - (r))))
#define V8_CONST(k) ((v8u32){(k), (k), (k), (k), (k), (k), (k), (k)})

/* words[t][j]: word t of lane j's padded block; out[j] = sha1_32 of lane j. */
static inline __attribute__((always_inline)) void sha1_x8(const uint32_t words[16][8], uint32_t out[8]) {
    v8u32 w[16];
    memcpy(w, words, sizeof w);
    v8u32 a = V8_CONST(0x67452301u), b = V8_CONST(0xEFCDAB89u), c = V8_CONST(0x98BADCFEu),
          d = V8_CONST(0x10325476u), e = V8_CONST(0xC3D2E1F0u);
    SHA1_ROUNDS(V8);
    (void)b, (void)c, (void)d, (void)e;
    a += V8_CONST(0x67452301u);
    memcpy(out, &a, sizeof a);
    for (int j = 0; j < 8; j++) out[j] = bswap32(out[j]);
}

/* sha1_32 of spans i < n (buf[start[i] .. end[i]]), eight single-block messages at a time; longer
 * ones one by one. */
static inline __attribute__((always_inline)) void sha1_spans_x8_body(const uint8_t *buf, const Py_ssize_t *start,
                                                                     const Py_ssize_t *end, Py_ssize_t n,
                                                                     uint32_t *out) {
    uint32_t words[16][8] = {{0}}, res[8];
    Py_ssize_t lane_of[8];
    uint8_t block[64];
    int k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t len = (size_t)(end[i] - start[i]);
        if (len > 55) {
            out[i] = sha1_32_portable(buf + start[i], len);
            continue;
        }
        sha1_tail(block, buf + start[i], len, len);
        for (int t = 0; t < 16; t++) words[t][k] = load_be32(block + 4 * t);
        lane_of[k++] = i;
        if (k == 8) {
            sha1_x8(words, res);
            for (int j = 0; j < 8; j++) out[lane_of[j]] = res[j];
            k = 0;
        }
    }
    if (k) {   /* the lanes still waiting (the others hold earlier messages: ignored) */
        sha1_x8(words, res);
        for (int j = 0; j < k; j++) out[lane_of[j]] = res[j];
    }
}

static void sha1_spans_x8(const uint8_t *buf, const Py_ssize_t *start, const Py_ssize_t *end, Py_ssize_t n,
                          uint32_t *out) {
    sha1_spans_x8_body(buf, start, end, n, out);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static void sha1_spans_x8_avx2(const uint8_t *buf, const Py_ssize_t *start,
                                                               const Py_ssize_t *end, Py_ssize_t n, uint32_t *out) {
    sha1_spans_x8_body(buf, start, end, n, out);
}
#endif

/* ---------------------------------------------------------------- SHA-1 with the x86 SHA extensions */

#ifdef X86
#define SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

/* Four rounds per instruction. The state vector holds A..D in lanes 3..0; a message vector holds four
 * schedule words W[4g..4g+3] in lanes 3..0, and SHA1NEXTE adds rotl(A, 30) of the state four rounds
 * back (the E of this group) to W[4g]. W[t] for t >= 16 comes four at a time from the four vectors
 * before it: SHA1MSG1 gives W[t-16] ^ W[t-14], XOR adds W[t-8], SHA1MSG2 adds W[t-3] and rotates. */
#define SCHEDULE(m0, m1, m2, m3) m0 = _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32(m0, m1), m2), m3)
#define ROUNDS_A(m, f) e0 = _mm_sha1nexte_epu32(e0, m); e1 = abcd; abcd = _mm_sha1rnds4_epu32(abcd, e0, f)
#define ROUNDS_B(m, f) e1 = _mm_sha1nexte_epu32(e1, m); e0 = abcd; abcd = _mm_sha1rnds4_epu32(abcd, e1, f)

SHA_TARGET static inline void sha1ni_block(__m128i *abcd_io, __m128i *e_io, const uint8_t *p) {
    const __m128i order = _mm_set_epi64x(0x0001020304050607LL, 0x08090A0B0C0D0E0FLL);
    __m128i abcd = *abcd_io, e0 = *e_io, e1;
    const __m128i abcd_start = abcd, e_start = e0;
    __m128i m0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), order);
    __m128i m1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16)), order);
    __m128i m2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 32)), order);
    __m128i m3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 48)), order);
    e0 = _mm_add_epi32(e0, m0); e1 = abcd; abcd = _mm_sha1rnds4_epu32(abcd, e0, 0);   /* rounds 0-3 */
    ROUNDS_B(m1, 0);
    ROUNDS_A(m2, 0);
    ROUNDS_B(m3, 0);
    SCHEDULE(m0, m1, m2, m3); ROUNDS_A(m0, 0);                                          /* 16-19 */
    SCHEDULE(m1, m2, m3, m0); ROUNDS_B(m1, 1);
    SCHEDULE(m2, m3, m0, m1); ROUNDS_A(m2, 1);
    SCHEDULE(m3, m0, m1, m2); ROUNDS_B(m3, 1);
    SCHEDULE(m0, m1, m2, m3); ROUNDS_A(m0, 1);
    SCHEDULE(m1, m2, m3, m0); ROUNDS_B(m1, 1);                                          /* 36-39 */
    SCHEDULE(m2, m3, m0, m1); ROUNDS_A(m2, 2);
    SCHEDULE(m3, m0, m1, m2); ROUNDS_B(m3, 2);
    SCHEDULE(m0, m1, m2, m3); ROUNDS_A(m0, 2);
    SCHEDULE(m1, m2, m3, m0); ROUNDS_B(m1, 2);
    SCHEDULE(m2, m3, m0, m1); ROUNDS_A(m2, 2);                                          /* 56-59 */
    SCHEDULE(m3, m0, m1, m2); ROUNDS_B(m3, 3);
    SCHEDULE(m0, m1, m2, m3); ROUNDS_A(m0, 3);
    SCHEDULE(m1, m2, m3, m0); ROUNDS_B(m1, 3);
    SCHEDULE(m2, m3, m0, m1); ROUNDS_A(m2, 3);
    SCHEDULE(m3, m0, m1, m2); ROUNDS_B(m3, 3);                                          /* 76-79 */
    *e_io = _mm_sha1nexte_epu32(e0, e_start);
    *abcd_io = _mm_add_epi32(abcd, abcd_start);
}

/* Two independent messages of one block each, interleaved so that each waits less on the latency of
 * the other's rounds. */
#define SCHEDULE2(m0, m1, m2, m3) SCHEDULE(x##m0, x##m1, x##m2, x##m3); SCHEDULE(y##m0, y##m1, y##m2, y##m3)
#define ROUNDS2_A(m, f) \
    xe0 = _mm_sha1nexte_epu32(xe0, x##m); xe1 = xs; xs = _mm_sha1rnds4_epu32(xs, xe0, f); \
    ye0 = _mm_sha1nexte_epu32(ye0, y##m); ye1 = ys; ys = _mm_sha1rnds4_epu32(ys, ye0, f)
#define ROUNDS2_B(m, f) \
    xe1 = _mm_sha1nexte_epu32(xe1, x##m); xe0 = xs; xs = _mm_sha1rnds4_epu32(xs, xe1, f); \
    ye1 = _mm_sha1nexte_epu32(ye1, y##m); ye0 = ys; ys = _mm_sha1rnds4_epu32(ys, ye1, f)

SHA_TARGET static inline void sha1ni_block2(__m128i *xs_io, __m128i *ys_io, const uint8_t *xp, const uint8_t *yp) {
    const __m128i order = _mm_set_epi64x(0x0001020304050607LL, 0x08090A0B0C0D0E0FLL);
    const __m128i e_start = _mm_set_epi32((int)0xC3D2E1F0u, 0, 0, 0);
    __m128i xs = *xs_io, ys = *ys_io, xe0, xe1, ye0, ye1;
    const __m128i start = xs;
    __m128i xm0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)xp), order);
    __m128i xm1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(xp + 16)), order);
    __m128i xm2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(xp + 32)), order);
    __m128i xm3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(xp + 48)), order);
    __m128i ym0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)yp), order);
    __m128i ym1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(yp + 16)), order);
    __m128i ym2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(yp + 32)), order);
    __m128i ym3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(yp + 48)), order);
    xe0 = _mm_add_epi32(e_start, xm0); xe1 = xs; xs = _mm_sha1rnds4_epu32(xs, xe0, 0);
    ye0 = _mm_add_epi32(e_start, ym0); ye1 = ys; ys = _mm_sha1rnds4_epu32(ys, ye0, 0);
    ROUNDS2_B(m1, 0);
    ROUNDS2_A(m2, 0);
    ROUNDS2_B(m3, 0);
    SCHEDULE2(m0, m1, m2, m3); ROUNDS2_A(m0, 0);
    SCHEDULE2(m1, m2, m3, m0); ROUNDS2_B(m1, 1);
    SCHEDULE2(m2, m3, m0, m1); ROUNDS2_A(m2, 1);
    SCHEDULE2(m3, m0, m1, m2); ROUNDS2_B(m3, 1);
    SCHEDULE2(m0, m1, m2, m3); ROUNDS2_A(m0, 1);
    SCHEDULE2(m1, m2, m3, m0); ROUNDS2_B(m1, 1);
    SCHEDULE2(m2, m3, m0, m1); ROUNDS2_A(m2, 2);
    SCHEDULE2(m3, m0, m1, m2); ROUNDS2_B(m3, 2);
    SCHEDULE2(m0, m1, m2, m3); ROUNDS2_A(m0, 2);
    SCHEDULE2(m1, m2, m3, m0); ROUNDS2_B(m1, 2);
    SCHEDULE2(m2, m3, m0, m1); ROUNDS2_A(m2, 2);
    SCHEDULE2(m3, m0, m1, m2); ROUNDS2_B(m3, 3);
    SCHEDULE2(m0, m1, m2, m3); ROUNDS2_A(m0, 3);
    SCHEDULE2(m1, m2, m3, m0); ROUNDS2_B(m1, 3);
    SCHEDULE2(m2, m3, m0, m1); ROUNDS2_A(m2, 3);
    SCHEDULE2(m3, m0, m1, m2); ROUNDS2_B(m3, 3);
    (void)xe1; (void)ye1;
    *xs_io = _mm_add_epi32(xs, start);   /* only A is needed: E's update is skipped */
    *ys_io = _mm_add_epi32(ys, start);
}

#define SHA1_STATE() _mm_set_epi32(0x67452301, (int)0xEFCDAB89u, (int)0x98BADCFEu, 0x10325476)

SHA_TARGET static uint32_t sha1_32_ni(const uint8_t *p, size_t n) {
    __m128i abcd = SHA1_STATE(), e = _mm_set_epi32((int)0xC3D2E1F0u, 0, 0, 0);
    size_t full = n / 64;
    for (size_t i = 0; i < full; i++) sha1ni_block(&abcd, &e, p + 64 * i);
    uint8_t tail[128];
    int blocks = sha1_tail(tail, p + 64 * full, n - 64 * full, n);
    for (int i = 0; i < blocks; i++) sha1ni_block(&abcd, &e, tail + 64 * i);
    return bswap32((uint32_t)_mm_extract_epi32(abcd, 3));
}

/* sha1_32 of spans i (start[i] .. end[i] of buf) for i < n, two single-block messages at a time. */
SHA_TARGET static void sha1_spans_ni(const uint8_t *buf, const Py_ssize_t *start, const Py_ssize_t *end,
                                     Py_ssize_t n, uint32_t *out) {
    uint8_t bx[64], by[64];   /* messages of <= 55 bytes: one padded block each */
    Py_ssize_t i = 0;
    while (i < n) {
        size_t lx = (size_t)(end[i] - start[i]);
        if (i + 1 < n && lx <= 55) {
            size_t ly = (size_t)(end[i + 1] - start[i + 1]);
            if (ly <= 55) {
                sha1_tail(bx, buf + start[i], lx, lx);
                sha1_tail(by, buf + start[i + 1], ly, ly);
                __m128i xs = SHA1_STATE(), ys = SHA1_STATE();
                sha1ni_block2(&xs, &ys, bx, by);
                out[i] = bswap32((uint32_t)_mm_extract_epi32(xs, 3));
                out[i + 1] = bswap32((uint32_t)_mm_extract_epi32(ys, 3));
                i += 2;
                continue;
            }
        }
        out[i] = sha1_32_ni(buf + start[i], lx);
        i += 1;
    }
}

static int have_sha_ni(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & (1u << 19)) || !(c & (1u << 9))) return 0;         /* SSE4.1, SSSE3 */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1;                                          /* SHA */
}

static int have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#else
static int have_sha_ni(void) { return 0; }
static int have_avx2(void) { return 0; }
#endif

static int use_sha_ni, use_avx2;

/* ---------------------------------------------------------------- XXH64 (the xxHash specification) */

#define P64_1 0x9E3779B185EBCA87ULL
#define P64_2 0xC2B2AE3D27D4EB4FULL
#define P64_3 0x165667B19E3779F9ULL
#define P64_4 0x85EBCA77C2B2AE63ULL
#define P64_5 0x27D4EB2F165667C5ULL

static inline uint64_t xxh64_round(uint64_t acc, uint64_t lane) {
    acc += lane * P64_2;
    return rotl64(acc, 31) * P64_1;
}

static inline uint64_t xxh64_merge(uint64_t h, uint64_t v) {
    h ^= xxh64_round(0, v);
    return h * P64_1 + P64_4;
}

static uint64_t xxh64(const uint8_t *p, size_t n, uint64_t seed) {
    const uint8_t *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = seed + P64_1 + P64_2, v2 = seed + P64_2, v3 = seed, v4 = seed - P64_1;
        const uint8_t *limit = end - 32;
        do {
            v1 = xxh64_round(v1, load_le64(p));
            v2 = xxh64_round(v2, load_le64(p + 8));
            v3 = xxh64_round(v3, load_le64(p + 16));
            v4 = xxh64_round(v4, load_le64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xxh64_merge(h, v1);
        h = xxh64_merge(h, v2);
        h = xxh64_merge(h, v3);
        h = xxh64_merge(h, v4);
    } else {
        h = seed + P64_5;
    }
    h += (uint64_t)n;
    for (; p + 8 <= end; p += 8) {
        h ^= xxh64_round(0, load_le64(p));
        h = rotl64(h, 27) * P64_1 + P64_4;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)load_le32(p) * P64_1;
        h = rotl64(h, 23) * P64_2 + P64_3;
        p += 4;
    }
    for (; p < end; p++) {
        h ^= (uint64_t)(*p) * P64_5;
        h = rotl64(h, 11) * P64_1;
    }
    h ^= h >> 33;
    h *= P64_2;
    h ^= h >> 29;
    h *= P64_3;
    h ^= h >> 32;
    return h;
}

/* ---------------------------------------------------------------- hashing spans */

static inline uint32_t fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    return h ^ (h >> 16);
}

/* The raw 32-bit hash of spans i < n: buf[start[i] .. end[i]] (word n-grams pass the ends of their last
 * words, `ends + n - 1`; character n-grams the code point offsets `starts + n`). */
static void hash_spans(const uint8_t *buf, const Py_ssize_t *start, const Py_ssize_t *end, Py_ssize_t n, int hash,
                       uint32_t *out) {
    if (hash == HASH_XXH64) {
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = (uint32_t)xxh64(buf + start[i], (size_t)(end[i] - start[i]), 0);
        return;
    }
#ifdef X86
    if (use_sha_ni) {
        sha1_spans_ni(buf, start, end, n, out);
        return;
    }
    if (use_avx2) {
        sha1_spans_x8_avx2(buf, start, end, n, out);
        return;
    }
#endif
    sha1_spans_x8(buf, start, end, n, out);
}

/* ---------------------------------------------------------------- permutations + minimum */

/* m[p] = min(m[p], min over shingles of the permuted hash), for p < num_perm. `h` holds fmix32'd
 * hashes for affine32 and raw ones for legacy. Written so that the compiler keeps a block of BLOCK
 * minima in vector registers while it streams the hashes. */
static inline __attribute__((always_inline)) void permute_affine32_body(const uint32_t *h, Py_ssize_t n,
        const uint32_t *a, const uint32_t *b, uint32_t *m, Py_ssize_t num_perm) {
    Py_ssize_t p0 = 0;
    for (; p0 + BLOCK <= num_perm; p0 += BLOCK) {
        uint32_t acc[BLOCK], ab[BLOCK], bb[BLOCK];
        memcpy(acc, m + p0, sizeof acc);
        memcpy(ab, a + p0, sizeof ab);
        memcpy(bb, b + p0, sizeof bb);
        for (Py_ssize_t s = 0; s < n; s++) {
            uint32_t x = h[s];
            for (int k = 0; k < BLOCK; k++) {
                uint32_t v = ab[k] * x + bb[k];
                acc[k] = v < acc[k] ? v : acc[k];
            }
        }
        memcpy(m + p0, acc, sizeof acc);
    }
    for (; p0 < num_perm; p0++) {
        uint32_t acc = m[p0];
        for (Py_ssize_t s = 0; s < n; s++) {
            uint32_t v = a[p0] * h[s] + b[p0];
            acc = v < acc ? v : acc;
        }
        m[p0] = acc;
    }
}

static inline uint32_t legacy_value(uint64_t a, uint64_t b, uint64_t x) {
    uint64_t v = a * x + b;                      /* wraps mod 2^64, as datasketch's uint64 arithmetic */
    uint64_t r = (v & MERSENNE) + (v >> 61);     /* v mod (2^61 - 1), up to one subtraction */
    r = r >= MERSENNE ? r - MERSENNE : r;
    return (uint32_t)r;                          /* & 0xFFFFFFFF */
}

static inline __attribute__((always_inline)) void permute_legacy_body(const uint32_t *h, Py_ssize_t n,
        const uint64_t *a, const uint64_t *b, uint32_t *m, Py_ssize_t num_perm) {
    Py_ssize_t p0 = 0;
    for (; p0 + BLOCK <= num_perm; p0 += BLOCK) {
        uint64_t acc[BLOCK], ab[BLOCK], bb[BLOCK];
        for (int k = 0; k < BLOCK; k++) acc[k] = m[p0 + k];
        memcpy(ab, a + p0, sizeof ab);
        memcpy(bb, b + p0, sizeof bb);
        for (Py_ssize_t s = 0; s < n; s++) {
            uint64_t x = h[s];
            for (int k = 0; k < BLOCK; k++) {
                uint64_t v = legacy_value(ab[k], bb[k], x);
                acc[k] = v < acc[k] ? v : acc[k];
            }
        }
        for (int k = 0; k < BLOCK; k++) m[p0 + k] = (uint32_t)acc[k];
    }
    for (; p0 < num_perm; p0++) {
        uint32_t acc = m[p0];
        for (Py_ssize_t s = 0; s < n; s++) {
            uint32_t v = legacy_value(a[p0], b[p0], h[s]);
            acc = v < acc ? v : acc;
        }
        m[p0] = acc;
    }
}

static void permute_affine32_plain(const uint32_t *h, Py_ssize_t n, const uint32_t *a, const uint32_t *b,
                                   uint32_t *m, Py_ssize_t num_perm) {
    permute_affine32_body(h, n, a, b, m, num_perm);
}

static void permute_legacy_plain(const uint32_t *h, Py_ssize_t n, const uint64_t *a, const uint64_t *b,
                                 uint32_t *m, Py_ssize_t num_perm) {
    permute_legacy_body(h, n, a, b, m, num_perm);
}

#ifdef X86
__attribute__((target("avx2"))) static void permute_affine32_avx2(const uint32_t *h, Py_ssize_t n,
        const uint32_t *a, const uint32_t *b, uint32_t *m, Py_ssize_t num_perm) {
    permute_affine32_body(h, n, a, b, m, num_perm);
}

__attribute__((target("avx2"))) static void permute_legacy_avx2(const uint32_t *h, Py_ssize_t n,
        const uint64_t *a, const uint64_t *b, uint32_t *m, Py_ssize_t num_perm) {
    permute_legacy_body(h, n, a, b, m, num_perm);
}
#endif

/* ---------------------------------------------------------------- the batch's permutations */

typedef struct {
    int scheme, hash;
    Py_ssize_t num_perm;
    const void *a, *b;
    void *out;   /* rows of num_perm uint32 (affine32) or uint64 (legacy) */
} Perms;

/* Row `row` of the output from the raw hashes of one text's shingles (`h` is modified). */
static void finish_row(const Perms *p, uint32_t *h, Py_ssize_t n, uint32_t *mins, Py_ssize_t row) {
    for (Py_ssize_t k = 0; k < p->num_perm; k++) mins[k] = EMPTY32;
    if (p->scheme == SCHEME_AFFINE32) {
        for (Py_ssize_t s = 0; s < n; s++) h[s] = fmix32(h[s]);
#ifdef X86
        if (use_avx2) permute_affine32_avx2(h, n, p->a, p->b, mins, p->num_perm);
        else
#endif
            permute_affine32_plain(h, n, p->a, p->b, mins, p->num_perm);
        memcpy((uint32_t *)p->out + row * p->num_perm, mins, p->num_perm * sizeof(uint32_t));
    } else {
#ifdef X86
        if (use_avx2) permute_legacy_avx2(h, n, p->a, p->b, mins, p->num_perm);
        else
#endif
            permute_legacy_plain(h, n, p->a, p->b, mins, p->num_perm);
        uint64_t *o = (uint64_t *)p->out + row * p->num_perm;
        for (Py_ssize_t k = 0; k < p->num_perm; k++) o[k] = mins[k];
    }
}

/* ---------------------------------------------------------------- growable scratch */

typedef struct {
    uint8_t *text;            /* the normalised text, UTF-8, words joined by one space */
    Py_ssize_t text_cap;
    Py_ssize_t *starts, *ends;  /* word (or code point) spans in `text` */
    Py_ssize_t span_cap;
    uint32_t *hashes, *mins;
    Py_ssize_t hash_cap;
} Scratch;

static int grow(void **p, Py_ssize_t *cap, Py_ssize_t need, size_t item) {
    if (need <= *cap) return 0;
    Py_ssize_t size = *cap ? *cap : 256;
    while (size < need) size *= 2;
    void *q = PyMem_Realloc(*p, (size_t)size * item);
    if (!q) { PyErr_NoMemory(); return -1; }
    *p = q, *cap = size;
    return 0;
}

static int grow_spans(Scratch *s, Py_ssize_t need) {
    if (need <= s->span_cap) return 0;
    Py_ssize_t cap = s->span_cap;
    if (grow((void **)&s->starts, &cap, need, sizeof(Py_ssize_t)) < 0) return -1;
    cap = s->span_cap;
    if (grow((void **)&s->ends, &cap, need, sizeof(Py_ssize_t)) < 0) return -1;
    s->span_cap = cap;
    return 0;
}

static void scratch_free(Scratch *s) {
    PyMem_Free(s->text);
    PyMem_Free(s->starts);
    PyMem_Free(s->ends);
    PyMem_Free(s->hashes);
}

/* ---------------------------------------------------------------- normalisation */

/* Per code point, filled on first sight from Python's own Unicode data (so exactly what `str.casefold`,
 * `unicodedata.category` and `str.split` do in this interpreter): 0 not looked up yet, BREAK (white
 * space or punctuation after case folding), KEEP (case folding leaves it, a word character), or
 * FOLDED + i: case folding maps it to folds[i], one to three code points, each a word character or a
 * break. `str.casefold` maps each code point on its own, so a text folds code point by code point. */
#define UNSEEN 0
#define BREAK 1
#define KEEP 2
#define FOLDED 3
typedef struct { int n; Py_UCS4 cp[3]; uint8_t brk[3]; } Fold;

static uint32_t *cp_state;
static Fold *folds;
static Py_ssize_t n_folds, folds_cap;
static uint8_t ascii_break[128], ascii_lower[128];   /* ASCII: word break?, case-folded byte */
static PyObject *category_fn, *normalize_fn, *nfc_str;

static int is_break(Py_UCS4 cp) {   /* 1, 0, or -1 with an exception set */
    if (Py_UNICODE_ISSPACE(cp)) return 1;
    PyObject *ch = PyUnicode_FromOrdinal((int)cp);
    if (!ch) return -1;
    PyObject *cat = PyObject_CallOneArg(category_fn, ch);
    Py_DECREF(ch);
    if (!cat) return -1;
    int punct = PyUnicode_Check(cat) && PyUnicode_GET_LENGTH(cat) > 0 && PyUnicode_READ_CHAR(cat, 0) == 'P';
    Py_DECREF(cat);
    return punct;
}

static int64_t look_up(Py_UCS4 cp) {   /* the state of cp (filled in), or -1 with an exception set */
    PyObject *ch = PyUnicode_FromOrdinal((int)cp), *folded = NULL;
    if (!ch) return -1;
    folded = PyObject_CallMethod(ch, "casefold", NULL);
    Py_DECREF(ch);
    if (!folded) return -1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(folded);
    int64_t state = -1;
    if (n == 1 && PyUnicode_READ_CHAR(folded, 0) == cp) {
        int brk = is_break(cp);
        if (brk >= 0) state = brk ? BREAK : KEEP;
    } else if (n >= 1 && n <= 3) {
        Fold f = {.n = (int)n};
        for (Py_ssize_t i = 0; i < n; i++) {
            f.cp[i] = PyUnicode_READ_CHAR(folded, i);
            int brk = is_break(f.cp[i]);
            if (brk < 0) goto done;
            f.brk[i] = (uint8_t)brk;
        }
        if (grow((void **)&folds, &folds_cap, n_folds + 1, sizeof(Fold)) < 0) goto done;
        folds[n_folds] = f;
        state = FOLDED + n_folds++;
    } else {
        PyErr_Format(PyExc_SystemError, "casefold of U+%04X gave %zd code points", (unsigned)cp, n);
    }
done:
    Py_DECREF(folded);
    if (state >= 0) cp_state[cp] = (uint32_t)state;
    return state;
}

static int surrogate_error(PyObject *text, Py_ssize_t i) {
    PyObject *exc = PyObject_CallFunction(PyExc_UnicodeEncodeError, "sOnns", "utf-8", text, i, i + 1,
                                          "surrogates not allowed");
    if (exc) {
        PyErr_SetObject(PyExc_UnicodeEncodeError, exc);
        Py_DECREF(exc);
    }
    return -1;
}

/* One code point >= 128 of a text being normalised (see `normalise`). */
static int slow_code_point(PyObject *text, Py_ssize_t i, Py_UCS4 c, Scratch *s, Py_ssize_t *o_io, Py_ssize_t *w_io,
                           Py_ssize_t *cps_io, int *in_word_io) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), o = *o_io, w = *w_io, cps = *cps_io;
    int in_word = *in_word_io;
    if (s->text_cap < o + 2 * (n - i) + 16 && grow((void **)&s->text, &s->text_cap, o + 2 * (n - i) + 16, 1) < 0)
        return -1;
    if (s->span_cap < w + (n - i) / 2 + 8 && grow_spans(s, w + (n - i) / 2 + 8) < 0) return -1;
    int64_t state = cp_state[c];
    if (state == UNSEEN && (state = look_up(c)) < 0) return -1;
    Py_UCS4 one[1] = {c};
    uint8_t one_brk[1] = {state == BREAK};
    const Py_UCS4 *seq = one;
    const uint8_t *brk = one_brk;
    int count = 1;
    if (state >= FOLDED) {
        const Fold *f = &folds[state - FOLDED];
        seq = f->cp, brk = f->brk, count = f->n;
    }
    uint8_t *out = s->text;
    for (int j = 0; j < count; j++) {
        Py_UCS4 cp = seq[j];
        if (brk[j]) {
            if (in_word) s->ends[w++] = o, in_word = 0;
            continue;
        }
        if (!in_word) {
            if (o) out[o++] = ' ', cps++;
            s->starts[w] = o, in_word = 1;
        }
        cps++;
        if (cp < 0x80) out[o++] = (uint8_t)cp;
        else if (cp < 0x800) {
            out[o++] = (uint8_t)(0xC0 | (cp >> 6));
            out[o++] = (uint8_t)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            if (cp >= 0xD800 && cp <= 0xDFFF) return surrogate_error(text, i);
            out[o++] = (uint8_t)(0xE0 | (cp >> 12));
            out[o++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            out[o++] = (uint8_t)(0x80 | (cp & 0x3F));
        } else {
            out[o++] = (uint8_t)(0xF0 | (cp >> 18));
            out[o++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            out[o++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            out[o++] = (uint8_t)(0x80 | (cp & 0x3F));
        }
    }
    *o_io = o, *w_io = w, *cps_io = cps, *in_word_io = in_word;
    return 0;
}

/* normalize_text(text).encode() into s->text (its length in *len), word spans into s->starts/ends (their
 * count in *words), the normalised text's length in code points in *chars. A non-ASCII `text` must be
 * NFC already; case folding happens here. */
static int normalise(PyObject *text, Scratch *s, Py_ssize_t *len, Py_ssize_t *words, Py_ssize_t *chars) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), o = 0, w = 0, cps = 0;
    if (grow((void **)&s->text, &s->text_cap, n + 1, 1) < 0) return -1;
    if (grow_spans(s, n / 2 + 2) < 0) return -1;
    uint8_t *out = s->text;
    Py_ssize_t *st = s->starts, *en = s->ends;
    int in_word = 0;
    if (PyUnicode_IS_ASCII(text)) {   /* one byte per code point, in and out */
        const uint8_t *p = PyUnicode_DATA(text);
        for (Py_ssize_t i = 0; i < n; i++) {
            uint8_t c = p[i];
            if (!ascii_break[c]) {
                if (!in_word) {
                    if (o) out[o++] = ' ';
                    st[w] = o, in_word = 1;
                }
                out[o++] = ascii_lower[c];
            } else if (in_word) {
                en[w++] = o, in_word = 0;
            }
        }
        if (in_word) en[w++] = o;
        *len = o, *words = w, *chars = o;
        return 0;
    }
    /* An ASCII code point writes at most 2 bytes (a space, itself) and a new word needs a break before
     * it: the slow path below keeps room for the rest of the text at that rate, plus its own worst case
     * (a space and 3 code points of 4 bytes; a word break per code point). */
    if (grow((void **)&s->text, &s->text_cap, 2 * n + 16, 1) < 0 || grow_spans(s, n / 2 + 8) < 0) return -1;
    out = s->text, st = s->starts, en = s->ends;
#define NORMALISE_LOOP(TYPE)                                                                              \
    {                                                                                                     \
        const TYPE *p = (const TYPE *)PyUnicode_DATA(text);                                               \
        for (Py_ssize_t i = 0; i < n; i++) {                                                              \
            Py_UCS4 c = p[i];                                                                             \
            if (c < 128) {                                                                                \
                if (!ascii_break[c]) {                                                                    \
                    if (!in_word) {                                                                       \
                        if (o) out[o++] = ' ', cps++;                                                     \
                        st[w] = o, in_word = 1;                                                           \
                    }                                                                                     \
                    out[o++] = ascii_lower[c], cps++;                                                     \
                } else if (in_word) {                                                                     \
                    en[w++] = o, in_word = 0;                                                             \
                }                                                                                         \
                continue;                                                                                 \
            }                                                                                             \
            if (slow_code_point(text, i, c, s, &o, &w, &cps, &in_word) < 0) return -1;                    \
            out = s->text, st = s->starts, en = s->ends;                                                  \
        }                                                                                                 \
    }
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND: NORMALISE_LOOP(Py_UCS1) break;
    case PyUnicode_2BYTE_KIND: NORMALISE_LOOP(Py_UCS2) break;
    default: NORMALISE_LOOP(Py_UCS4) break;
    }
#undef NORMALISE_LOOP
    if (in_word) en[w++] = o;
    *len = o, *words = w, *chars = cps;
    return 0;
}

/* ---------------------------------------------------------------- argument checks */

static int check_perms(Py_buffer *a, Py_buffer *b, Py_buffer *out, int scheme, Py_ssize_t rows, Perms *p) {
    Py_ssize_t item = scheme == SCHEME_LEGACY ? 8 : 4;
    if (scheme != SCHEME_AFFINE32 && scheme != SCHEME_LEGACY) {
        PyErr_SetString(PyExc_ValueError, "scheme must be 0 (affine32) or 1 (legacy)");
        return -1;
    }
    if (a->len % item || a->len != b->len || a->len == 0) {
        PyErr_SetString(PyExc_ValueError, "a and b must hold num_perm values of the scheme's width");
        return -1;
    }
    p->num_perm = a->len / item;
    if (out->len != rows * p->num_perm * item) {
        PyErr_Format(PyExc_ValueError, "out must hold %zd x %zd values of %zd bytes", rows, p->num_perm, item);
        return -1;
    }
    p->scheme = scheme, p->a = a->buf, p->b = b->buf, p->out = out->buf;
    return 0;
}

static int check_hash(int hash) {
    if (hash == HASH_SHA1 || hash == HASH_XXH64) return 0;
    PyErr_SetString(PyExc_ValueError, "hash must be 0 (sha1) or 1 (xxh64)");
    return -1;
}

/* normalise() of texts[row]: None is the empty text; non-ASCII text is put in NFC first (by Python's
 * unicodedata, which returns the text itself when it is NFC already). */
static int normalise_item(PyObject *text, Py_ssize_t row, Scratch *s, Py_ssize_t *len, Py_ssize_t *words,
                          Py_ssize_t *chars) {
    *len = *words = *chars = 0;
    if (text == Py_None) return 0;
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "texts[%zd] must be str or None, got %.80s", row, Py_TYPE(text)->tp_name);
        return -1;
    }
    PyObject *nfc = NULL;
    if (!PyUnicode_IS_ASCII(text) && !(nfc = PyObject_CallFunctionObjArgs(normalize_fn, nfc_str, text, NULL)))
        return -1;
    int failed = normalise(nfc ? nfc : text, s, len, words, chars);
    Py_XDECREF(nfc);
    return failed;
}

/* normalized(texts) -> [bytes]: normalize_text(text).encode() of each (b"" for None). */
static PyObject *py_normalized(PyObject *self, PyObject *texts) {
    PyObject *seq = PySequence_Fast(texts, "texts must be a sequence"), *result = NULL;
    if (!seq) return NULL;
    Scratch s = {0};
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (!(result = PyList_New(count))) goto done;
    for (Py_ssize_t row = 0; row < count; row++) {
        Py_ssize_t len, words, chars;
        PyObject *bytes;
        if (normalise_item(items[row], row, &s, &len, &words, &chars) < 0 ||
            !(bytes = PyBytes_FromStringAndSize((const char *)s.text, len))) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, row, bytes);
    }
done:
    Py_DECREF(seq);
    scratch_free(&s);
    return result;
}

/* ---------------------------------------------------------------- signatures(texts, ...) */

static PyObject *py_signatures(PyObject *self, PyObject *args) {
    PyObject *texts;
    int mode, hash, scheme;
    Py_ssize_t ngram, char_ngram;
    Py_buffer a = {0}, b = {0}, out = {0};
    if (!PyArg_ParseTuple(args, "Oinniiy*y*w*", &texts, &mode, &ngram, &char_ngram, &hash, &scheme, &a, &b, &out))
        return NULL;
    PyObject *seq = NULL, *result = NULL;
    Scratch s = {0};
    Perms p;
    if (mode < MODE_WORD || mode > MODE_AUTO || ngram < 1 || char_ngram < 1) {
        PyErr_SetString(PyExc_ValueError, "mode must be 0, 1 or 2 and the n-gram sizes >= 1");
        goto done;
    }
    if (check_hash(hash) < 0) goto done;
    if (!(seq = PySequence_Fast(texts, "texts must be a sequence"))) goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (check_perms(&a, &b, &out, scheme, count, &p) < 0) goto done;
    p.hash = hash;
    Py_ssize_t mins_cap = 0;
    if (grow((void **)&s.mins, &mins_cap, p.num_perm, sizeof(uint32_t)) < 0) goto done;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t row = 0; row < count; row++) {
        Py_ssize_t len = 0, words = 0, chars = 0;
        if (normalise_item(items[row], row, &s, &len, &words, &chars) < 0) goto done;
        Py_ssize_t n = 0;
        if (words == 0) {
            finish_row(&p, s.hashes, 0, s.mins, row);
            continue;
        }
        int by_char = mode == MODE_CHAR || (mode == MODE_AUTO && chars > 20 * words);
        if (by_char) {   /* code point spans: starts[i] = byte offset of code point i, starts[chars] = len */
            if (grow_spans(&s, chars + 1) < 0) goto done;
            Py_ssize_t k = 0;
            for (Py_ssize_t i = 0; i < len; i++)
                if ((s.text[i] & 0xC0) != 0x80) s.starts[k++] = i;
            s.starts[k] = len;
            n = chars > char_ngram ? chars - char_ngram + 1 : 1;
            Py_ssize_t width = chars < char_ngram ? chars : char_ngram;
            if (grow((void **)&s.hashes, &s.hash_cap, n, sizeof(uint32_t)) < 0) goto done;
            hash_spans(s.text, s.starts, s.starts + width, n, hash, s.hashes);
        } else if (words <= ngram) {
            n = 1;
            if (grow((void **)&s.hashes, &s.hash_cap, 1, sizeof(uint32_t)) < 0) goto done;
            Py_ssize_t zero = 0;
            hash_spans(s.text, &zero, &len, 1, hash, s.hashes);
        } else {
            n = words - ngram + 1;
            if (grow((void **)&s.hashes, &s.hash_cap, n, sizeof(uint32_t)) < 0) goto done;
            hash_spans(s.text, s.starts, s.ends + ngram - 1, n, hash, s.hashes);
        }
        finish_row(&p, s.hashes, n, s.mins, row);
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(seq);
    scratch_free(&s);
    PyMem_Free(s.mins);
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    PyBuffer_Release(&out);
    return result;
}

/* ---------------------------------------------------------------- spans given by the caller */

/* `spans`: int64 offsets, len n+1 (span i is buf[spans[i] .. spans[i + 1]]). */
static int check_spans(Py_buffer *buf, Py_buffer *spans, Py_ssize_t *n) {
    if (spans->len % 8 || spans->len < 8) {
        PyErr_SetString(PyExc_ValueError, "spans must be int64 offsets, one more than the spans");
        return -1;
    }
    if (sizeof(Py_ssize_t) != 8) {
        PyErr_SetString(PyExc_SystemError, "spans need a 64-bit Py_ssize_t");
        return -1;
    }
    const int64_t *o = spans->buf;
    *n = spans->len / 8 - 1;
    for (Py_ssize_t i = 0; i < *n; i++)
        if (o[i] < 0 || o[i + 1] < o[i] || o[i + 1] > buf->len) {
            PyErr_SetString(PyExc_ValueError, "spans must be non-decreasing offsets inside buf");
            return -1;
        }
    return 0;
}

static PyObject *py_hashes(PyObject *self, PyObject *args) {
    Py_buffer buf = {0}, spans = {0}, out = {0};
    int hash;
    PyObject *result = NULL;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "y*y*iw*", &buf, &spans, &hash, &out)) return NULL;
    if (check_hash(hash) < 0 || check_spans(&buf, &spans, &n) < 0) goto done;
    if (out.len != n * 4) {
        PyErr_SetString(PyExc_ValueError, "out must hold one uint32 per span");
        goto done;
    }
    const Py_ssize_t *o = spans.buf;
    hash_spans(buf.buf, o, o + 1, n, hash, out.buf);
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&spans);
    PyBuffer_Release(&out);
    return result;
}

/* `docs`: int64 span indices, len rows+1 (document r's shingles are spans docs[r] .. docs[r + 1]). */
static PyObject *py_span_signatures(PyObject *self, PyObject *args) {
    Py_buffer buf = {0}, spans = {0}, docs = {0}, a = {0}, b = {0}, out = {0};
    int hash, scheme;
    PyObject *result = NULL;
    uint32_t *h = NULL, *mins = NULL;
    Py_ssize_t n;
    Perms p;
    if (!PyArg_ParseTuple(args, "y*y*y*iiy*y*w*", &buf, &spans, &docs, &hash, &scheme, &a, &b, &out)) return NULL;
    if (check_hash(hash) < 0 || check_spans(&buf, &spans, &n) < 0) goto done;
    const int64_t *d = docs.buf;
    Py_ssize_t rows = docs.len / 8 - 1;
    if (docs.len % 8 || rows < 0 || d[0] != 0 || d[rows] != n) {
        PyErr_SetString(PyExc_ValueError, "docs must be int64 span indices from 0 to the number of spans");
        goto done;
    }
    for (Py_ssize_t r = 0; r < rows; r++)
        if (d[r + 1] < d[r]) {
            PyErr_SetString(PyExc_ValueError, "docs must be non-decreasing");
            goto done;
        }
    if (check_perms(&a, &b, &out, scheme, rows, &p) < 0) goto done;
    p.hash = hash;
    if (!(h = PyMem_Malloc((size_t)(n ? n : 1) * 4)) || !(mins = PyMem_Malloc((size_t)p.num_perm * 4))) {
        PyErr_NoMemory();
        goto done;
    }
    const Py_ssize_t *o = spans.buf;
    hash_spans(buf.buf, o, o + 1, n, hash, h);
    for (Py_ssize_t r = 0; r < rows; r++) finish_row(&p, h + d[r], d[r + 1] - d[r], mins, r);
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(h);
    PyMem_Free(mins);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&spans);
    PyBuffer_Release(&docs);
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *py_xxh64(PyObject *self, PyObject *args) {
    Py_buffer data;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "y*|K", &data, &seed)) return NULL;
    uint64_t h = xxh64(data.buf, (size_t)data.len, seed);
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLongLong(h);
}

static PyObject *py_features(PyObject *self, PyObject *noargs) {
    return Py_BuildValue("{s:O,s:O}", "sha_ni", use_sha_ni ? Py_True : Py_False, "avx2", use_avx2 ? Py_True : Py_False);
}

/* Tests switch the CPU paths off to check the portable ones. */
static PyObject *py_set_features(PyObject *self, PyObject *args) {
    int sha, avx2;
    if (!PyArg_ParseTuple(args, "pp", &sha, &avx2)) return NULL;
    use_sha_ni = sha && have_sha_ni();
    use_avx2 = avx2 && have_avx2();
    return py_features(self, NULL);
}

static PyMethodDef methods[] = {
    {"signatures", py_signatures, METH_VARARGS,
     "signatures(texts, mode, ngram, char_ngram, hash, scheme, a, b, out): MinHash rows of texts into out"},
    {"span_signatures", py_span_signatures, METH_VARARGS,
     "span_signatures(buf, spans, docs, hash, scheme, a, b, out): MinHash rows of shingles given as spans"},
    {"normalized", py_normalized, METH_O, "normalized(texts) -> [bytes]: normalize_text(t).encode() of each text"},
    {"hashes", py_hashes, METH_VARARGS, "hashes(buf, spans, hash, out): 32-bit hash of every span into out"},
    {"xxh64", py_xxh64, METH_VARARGS, "xxh64(data, seed=0) -> int: XXH64 of bytes"},
    {"features", py_features, METH_NOARGS, "features() -> the CPU paths in use"},
    {"set_features", py_set_features, METH_VARARGS, "set_features(sha_ni, avx2): use these CPU paths if present"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_minhash", "MinHash signatures of a batch.", -1, methods};

PyMODINIT_FUNC PyInit__minhash(void) {
    PyObject *unicodedata = PyImport_ImportModule("unicodedata");
    if (!unicodedata) return NULL;
    category_fn = PyObject_GetAttrString(unicodedata, "category");
    normalize_fn = PyObject_GetAttrString(unicodedata, "normalize");
    Py_DECREF(unicodedata);
    nfc_str = PyUnicode_InternFromString("NFC");
    if (!category_fn || !normalize_fn || !nfc_str) return NULL;
    if (!cp_state && !(cp_state = PyMem_Calloc(0x110000, sizeof(uint32_t)))) return PyErr_NoMemory();
    for (uint32_t c = 0; c < 128; c++) {   /* ASCII folds to ASCII, one to one (to lower case) */
        int brk = is_break(c);
        if (brk < 0) return NULL;
        ascii_break[c] = (uint8_t)brk;
        ascii_lower[c] = (uint8_t)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    use_sha_ni = have_sha_ni();
    use_avx2 = have_avx2();
    return PyModule_Create(&module);
}
