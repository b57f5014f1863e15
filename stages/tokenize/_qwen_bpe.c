/* A fast exact encoder for the Qwen BPE (stages/tokenize/fast_bpe.py wraps it; tests compare it with tiktoken).
 *
 *     enc = _qwen_bpe.Encoder(tokens, classes)   # tokens[rank] = bytes; classes[cp] = 1 letter, 2 number, 4 space
 *     enc.encode("text") -> bytes of little-endian int32 ids (np.frombuffer(..., np.int32))
 *
 * The same two steps as tiktoken's `encode_ordinary`: split the text into pieces with Qwen's
 * pre-tokenizer pattern, then byte-pair merge each piece (lowest rank first, leftmost on ties). The
 * pattern is matched by a hand-written scanner instead of a backtracking regex engine:
 *
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N} | ?[^\s\p{L}\p{N}]+[\r\n]*
 *   | \s*[\r\n]+ | \s+(?!\S) | \s+
 *
 * tried in that order at each position (leftmost-first, greedy, with the backtracking the regex does).
 * Character classes come from a table indexed by code point, built in Python from the Unicode data.
 * Hostile text costs time near-linear in its length: each branch of the scanner passes over a run once
 * (a run of white space at most twice), a piece longer than every token skips the vocabulary lookup, and
 * a long piece merges through a heap in O(n log n) (short ones by rescanning, like tiktoken).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define LETTER 1
#define NUMBER 2
#define SPACE 4
#define NO_RANK UINT32_MAX
#define SHORT_PIECE 64   /* pieces of fewer bytes merge by rescanning, longer ones through a heap */

typedef struct {
    PyObject_HEAD
    uint8_t *classes;          /* 0x110000 entries */
    uint32_t *slots;           /* open addressing: rank + 1, 0 = empty */
    uint64_t mask;
    char *blob;                /* all token bytes */
    uint64_t *offsets;         /* offsets[rank] .. offsets[rank + 1] */
    uint32_t n_tokens;
    Py_ssize_t max_len;        /* the longest token's length: longer byte strings have no rank */
} Encoder;

typedef struct { uint32_t *ids; Py_ssize_t len, cap; } Ids;

static uint64_t hash_bytes(const uint8_t *p, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static uint32_t rank_of(const Encoder *e, const uint8_t *p, Py_ssize_t n) {
    for (uint64_t s = hash_bytes(p, n) & e->mask;; s = (s + 1) & e->mask) {
        uint32_t v = e->slots[s];
        if (!v) return NO_RANK;
        uint64_t a = e->offsets[v - 1], b = e->offsets[v];
        if ((Py_ssize_t)(b - a) == n && memcmp(e->blob + a, p, n) == 0) return v - 1;
    }
}

/* ---------------------------------------------------------------- scanning */

/* The code point at byte i of valid UTF-8 (Python's own encoding of a str); *len gets its byte length. */
static uint32_t cp_at(const uint8_t *s, Py_ssize_t i, int *len) {
    uint8_t c = s[i];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((c & 0x1F) << 6) | (s[i + 1] & 0x3F); }
    if (c < 0xF0) { *len = 3; return ((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F); }
    *len = 4;
    return ((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
}

static Py_ssize_t run_of(const Encoder *e, const uint8_t *s, Py_ssize_t i, Py_ssize_t n, int want, int none) {
    /* End of the run from i of code points whose class has `want` bits (or, with none, has no `none` bits). */
    int len;
    while (i < n) {
        uint8_t k = e->classes[cp_at(s, i, &len)];
        if (none ? (k & none) : !(k & want)) break;
        i += len;
    }
    return i;
}

static int folds_to(uint32_t c, char lower) {  /* (?i) for the contraction letters; U+017F folds to s */
    return c == (uint32_t)lower || c == (uint32_t)(lower - 32) || (lower == 's' && c == 0x17F);
}

static Py_ssize_t contraction(const uint8_t *s, Py_ssize_t i, Py_ssize_t n) {
    /* i is at an apostrophe: the end of 's 't 'm 'd 're 've 'll (any case), or -1. */
    int l1, l2;
    if (i + 1 >= n) return -1;
    uint32_t c1 = cp_at(s, i + 1, &l1);
    if (folds_to(c1, 's') || folds_to(c1, 't') || folds_to(c1, 'm') || folds_to(c1, 'd')) return i + 1 + l1;
    if (i + 1 + l1 >= n) return -1;
    uint32_t c2 = cp_at(s, i + 1 + l1, &l2);
    if ((folds_to(c1, 'r') && folds_to(c2, 'e')) || (folds_to(c1, 'v') && folds_to(c2, 'e')) ||
        (folds_to(c1, 'l') && folds_to(c2, 'l'))) return i + 1 + l1 + l2;
    return -1;
}

static Py_ssize_t spaces(const Encoder *e, const uint8_t *s, Py_ssize_t start, Py_ssize_t n) {
    /* \s*[\r\n]+ | \s+(?!\S) | \s+ at start (a space): up to the last line break of the run; else the
       run when it ends the text; else the run less its last character when that leaves one; else the run. */
    Py_ssize_t after_break = -1, last = start, i = start;
    int len;
    while (i < n) {
        uint32_t c = cp_at(s, i, &len);
        if (!(e->classes[c] & SPACE)) break;
        last = i;
        i += len;
        if (c == '\r' || c == '\n') after_break = i;
    }
    if (after_break >= 0) return after_break;
    if (i == n || last == start) return i;
    return last;
}

static Py_ssize_t piece_end(const Encoder *e, const uint8_t *s, Py_ssize_t i, Py_ssize_t n) {
    int l0, l1;
    uint32_t c0 = cp_at(s, i, &l0);
    uint8_t k0 = e->classes[c0];
    if (c0 == '\'') {
        Py_ssize_t end = contraction(s, i, n);
        if (end > 0) return end;
    }
    if (k0 & LETTER) return run_of(e, s, i, n, LETTER, 0);
    if (c0 != '\r' && c0 != '\n' && !(k0 & NUMBER) && i + l0 < n && (e->classes[cp_at(s, i + l0, &l1)] & LETTER))
        return run_of(e, s, i + l0, n, LETTER, 0);
    if (k0 & NUMBER) return i + l0;
    Py_ssize_t j = c0 == ' ' ? i + 1 : i;
    if (j < n && !(e->classes[cp_at(s, j, &l1)] & (SPACE | LETTER | NUMBER))) {
        j = run_of(e, s, j, n, 0, SPACE | LETTER | NUMBER);
        while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
        return j;
    }
    return spaces(e, s, i, n);
}

/* ---------------------------------------------------------------- merging */

static inline uint32_t rank_if_short(const Encoder *e, const uint8_t *p, Py_ssize_t n) {
    return n <= e->max_len ? rank_of(e, p, n) : NO_RANK;   /* longer than every token: no hashing */
}

static int push(Ids *out, uint32_t id) {
    if (out->len == out->cap) {
        Py_ssize_t cap = out->cap ? out->cap * 2 : 1024;
        uint32_t *grown = PyMem_Realloc(out->ids, cap * sizeof(uint32_t));
        if (!grown) { PyErr_NoMemory(); return -1; }
        out->ids = grown, out->cap = cap;
    }
    out->ids[out->len++] = id;
    return 0;
}

static int merge_short(const Encoder *e, const uint8_t *p, Py_ssize_t n, Ids *out) {
    /* Byte-pair merging of a short piece (n < SHORT_PIECE) by rescanning, as tiktoken does below 100 bytes:
       starts[k] is where part k begins (plus the end), pair[k] the rank of parts k and k + 1 joined; the
       lowest (leftmost on ties) joins first. Quadratic, but on stack arrays it beats a heap at this size. */
    Py_ssize_t starts[SHORT_PIECE + 1];
    uint32_t pair[SHORT_PIECE];
    Py_ssize_t parts = n;
    for (Py_ssize_t k = 0; k <= n; k++) starts[k] = k;
    for (Py_ssize_t k = 0; k + 1 < parts; k++) pair[k] = rank_of(e, p + k, 2);
    while (parts > 1) {
        Py_ssize_t best = -1;
        uint32_t best_rank = NO_RANK;
        for (Py_ssize_t k = 0; k + 1 < parts; k++)
            if (pair[k] < best_rank) best_rank = pair[k], best = k;
        if (best < 0) break;
        memmove(starts + best + 1, starts + best + 2, (parts - best - 1) * sizeof(Py_ssize_t));
        if (parts - best - 3 > 0) memmove(pair + best + 1, pair + best + 2, (parts - best - 3) * sizeof(uint32_t));
        parts--;
        if (best + 1 < parts) pair[best] = rank_of(e, p + starts[best], starts[best + 2] - starts[best]);
        if (best > 0) pair[best - 1] = rank_of(e, p + starts[best - 1], starts[best + 1] - starts[best - 1]);
    }
    for (Py_ssize_t k = 0; k < parts; k++)
        if (push(out, rank_of(e, p + starts[k], starts[k + 1] - starts[k]))) return -1;
    return 0;
}

/* A long piece (base64, minified code, a run of one character) merges in O(n log n): its parts form a
   linked list over their start offsets, and a binary min-heap of the pairs that have a rank, keyed by
   (rank, start), yields the lowest-rank pair, leftmost on ties: the order of tiktoken's scan. A merge
   changes three pairs (the one merged away and its two neighbours), so it costs three heap updates;
   pairs longer than the longest token have no rank and are never hashed, so a lookup is O(1) however
   long the parts grow. Memory: 20 bytes per byte of the piece, freed when it is done. */

#define ABSENT UINT32_MAX   /* pos[] of a part whose pair is not in the heap */

typedef struct {
    uint64_t *heap;   /* rank << 32 | start per pair: comparing whole keys keeps the sifting in this array */
    uint32_t *pos;    /* pos[s]: index in heap of the pair of the part starting at s, or ABSENT */
    uint32_t *end;    /* end[s]: where the part starting at s ends (the next part's start) */
    uint32_t *prev;   /* prev[s]: where the part before it starts */
    uint32_t size;
} Parts;

static inline void place(Parts *q, uint32_t i, uint64_t key) { q->heap[i] = key, q->pos[(uint32_t)key] = i; }

static void sift_up(Parts *q, uint32_t i, uint64_t key) {
    while (i > 0 && key < q->heap[(i - 1) / 2]) {
        place(q, i, q->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    place(q, i, key);
}

static void sift_down(Parts *q, uint32_t i, uint64_t key) {
    for (uint32_t child; (child = 2 * i + 1) < q->size; i = child) {
        if (child + 1 < q->size && q->heap[child + 1] < q->heap[child]) child++;
        if (q->heap[child] >= key) break;
        place(q, i, q->heap[child]);
    }
    place(q, i, key);
}

static void set_rank(Parts *q, uint32_t s, uint32_t r) {
    /* The pair of the part at s now has rank r: it enters, moves in or leaves the heap (pairs without a
       rank stay out of it). */
    uint32_t i = q->pos[s];
    uint64_t key = (uint64_t)r << 32 | s;
    if (i == ABSENT) {
        if (r != NO_RANK) sift_up(q, q->size++, key);
        return;
    }
    if (r == NO_RANK) {   /* the heap's last entry fills the hole */
        q->pos[s] = ABSENT;
        key = q->heap[--q->size];
        if (i == q->size) return;
    }
    if (i > 0 && key < q->heap[(i - 1) / 2]) sift_up(q, i, key);
    else sift_down(q, i, key);
}

static int merge_long(const Encoder *e, const uint8_t *p, Py_ssize_t n, Ids *out) {
    if ((uint64_t)n >= ABSENT) { PyErr_SetString(PyExc_ValueError, "a pre-token of 4 GiB or more"); return -1; }
    uint64_t *heap = PyMem_Malloc((size_t)n * sizeof(uint64_t));
    uint32_t *block = PyMem_Malloc(3 * (size_t)n * sizeof(uint32_t));
    if (!heap || !block) { PyMem_Free(heap), PyMem_Free(block); PyErr_NoMemory(); return -1; }
    uint32_t m = (uint32_t)n;
    Parts q = {heap, block, block + m, block + 2 * (size_t)m, 0};
    for (uint32_t s = 0; s < m; s++) {
        uint32_t r = s + 1 < m ? rank_of(e, p + s, 2) : NO_RANK;
        q.end[s] = s + 1, q.prev[s] = s - 1, q.pos[s] = ABSENT;
        if (r != NO_RANK) place(&q, q.size++, (uint64_t)r << 32 | s);
    }
    for (uint32_t i = q.size / 2; i-- > 0;) sift_down(&q, i, q.heap[i]);
    while (q.size) {
        uint32_t s = (uint32_t)q.heap[0], t = q.end[s], after = q.end[t];   /* parts s and t become one */
        set_rank(&q, t, NO_RANK);
        q.end[s] = after;
        if (after < m) q.prev[after] = s;
        set_rank(&q, s, after < m ? rank_if_short(e, p + s, q.end[after] - s) : NO_RANK);
        if (s > 0) set_rank(&q, q.prev[s], rank_if_short(e, p + q.prev[s], after - q.prev[s]));
    }
    int rc = 0;
    for (uint32_t s = 0; s < m && rc == 0; s = q.end[s]) rc = push(out, rank_of(e, p + s, q.end[s] - s));
    PyMem_Free(heap);
    PyMem_Free(block);
    return rc;
}

static int merge_piece(const Encoder *e, const uint8_t *p, Py_ssize_t n, Ids *out) {
    /* Byte-pair merging of one piece not in the vocabulary. */
    return n < SHORT_PIECE ? merge_short(e, p, n, out) : merge_long(e, p, n, out);
}

static PyObject *Encoder_encode(Encoder *e, PyObject *text) {
    Py_ssize_t n;
    if (!PyUnicode_Check(text)) return PyErr_Format(PyExc_TypeError, "encode() takes a str");
    const uint8_t *s = (const uint8_t *)PyUnicode_AsUTF8AndSize(text, &n);
    if (!s) return NULL;   /* lone surrogates: the caller falls back to tiktoken */
    Ids out = {NULL, 0, 0};
    int rc = 0;
    for (Py_ssize_t i = 0; i < n && rc == 0;) {
        Py_ssize_t end = piece_end(e, s, i, n);
        uint32_t r = rank_if_short(e, s + i, end - i);
        rc = r != NO_RANK ? push(&out, r) : merge_piece(e, s + i, end - i, &out);
        i = end;
    }
    PyObject *result = rc ? NULL : PyBytes_FromStringAndSize((const char *)out.ids, out.len * 4);
    PyMem_Free(out.ids);
    return result;
}

/* ---------------------------------------------------------------- the type */

static int Encoder_init(Encoder *e, PyObject *args, PyObject *kwargs) {
    PyObject *tokens;
    Py_buffer classes;
    if (!PyArg_ParseTuple(args, "O!y*", &PyList_Type, &tokens, &classes)) return -1;
    if (classes.len != 0x110000) {
        PyBuffer_Release(&classes);
        PyErr_SetString(PyExc_ValueError, "classes must hold one byte per code point (0x110000)");
        return -1;
    }
    Py_ssize_t count = PyList_GET_SIZE(tokens), total = 0;
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *t = PyList_GET_ITEM(tokens, r);
        if (!PyBytes_Check(t)) { PyBuffer_Release(&classes); PyErr_SetString(PyExc_TypeError, "tokens must be bytes"); return -1; }
        total += PyBytes_GET_SIZE(t);
    }
    uint64_t size = 1;
    while (size < (uint64_t)count * 3) size <<= 1;
    e->classes = PyMem_Malloc(0x110000);
    e->slots = PyMem_Calloc(size, sizeof(uint32_t));
    e->blob = PyMem_Malloc(total ? total : 1);
    e->offsets = PyMem_Malloc((count + 1) * sizeof(uint64_t));
    if (!e->classes || !e->slots || !e->blob || !e->offsets) { PyBuffer_Release(&classes); PyErr_NoMemory(); return -1; }
    memcpy(e->classes, classes.buf, 0x110000);
    PyBuffer_Release(&classes);
    e->mask = size - 1, e->n_tokens = (uint32_t)count, e->offsets[0] = 0, e->max_len = 0;
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *t = PyList_GET_ITEM(tokens, r);
        Py_ssize_t len = PyBytes_GET_SIZE(t);
        memcpy(e->blob + e->offsets[r], PyBytes_AS_STRING(t), len);
        if (len > e->max_len) e->max_len = len;
        e->offsets[r + 1] = e->offsets[r] + len;
        uint64_t s = hash_bytes((const uint8_t *)PyBytes_AS_STRING(t), len) & e->mask;
        while (e->slots[s]) s = (s + 1) & e->mask;
        e->slots[s] = (uint32_t)r + 1;
    }
    return 0;
}

static void Encoder_dealloc(Encoder *e) {
    PyMem_Free(e->classes);
    PyMem_Free(e->slots);
    PyMem_Free(e->blob);
    PyMem_Free(e->offsets);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)Encoder_encode, METH_O, "encode(text) -> bytes of int32 token ids (no special tokens)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stages.tokenize._qwen_bpe.Encoder",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Encoder(tokens: list[bytes], classes: bytes): Qwen pre-tokenizer + byte-pair merging",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_methods = Encoder_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_qwen_bpe", "Exact fast Qwen BPE encoding.", -1, NULL};

PyMODINIT_FUNC PyInit__qwen_bpe(void) {
    if (PyType_Ready(&EncoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&EncoderType);
    if (PyModule_AddObject(m, "Encoder", (PyObject *)&EncoderType) < 0) { Py_DECREF(&EncoderType); Py_DECREF(m); return NULL; }
    return m;
}
