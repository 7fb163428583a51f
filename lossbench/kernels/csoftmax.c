/* Softmax over rows of a float32 [rows, v] array, one C loop per pass over memory (card K2, K3:
 * lossbench/kernels/registry.py), for a CPU timing of the pass counts that the torch-op variants in
 * softmax.py cannot give (their temporaries are passes of their own).
 *
 * Every variant computes e^x the same way, as the two-pass paper's kernels do: n = rint(x·log2 e),
 * t = x − n·ln2 (Cody–Waite, ln2 in three parts), p = a degree-5 polynomial ≈ e^t, e^x = p·2^n with
 * 2^n built from the exponent bits. LANES independent accumulators per row let the compiler
 * vectorise the reductions (the paper's kernels use several accumulators too). Single-threaded.
 * Non-finite entries as in softmax.py (its module docstring): −inf is masked, a row of −inf only gives
 * zeros, NaN or +inf anywhere gives a NaN row (torch.softmax's result); finite rows of any magnitude
 * match torch. Compiled by csoftmax.py with -O3 -march=native.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 16
#define BLOCK 1024 /* entries per block of lane sums; a multiple of LANES */
#define EMPTY (-1.0e9f) /* the exponent of an empty sum: 2^(EMPTY − e) is 0 for any real e */
#define XMIN (-2.0e4f) /* softmax.EXTEXP_RANGE: below −XMIN the reduction is exact (|n| < 2^15) */

typedef struct {
    float poly[6]; /* highest power first (Horner) */
    float log2e, ln2_hi, ln2_mid, ln2_lo;
} consts;

static inline float bits_to_float(int32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* 2^k for integer-valued k: exact for k in [−126, 127], 0 below (k is never large here); NaN gives 0
 * (the NaN is carried by the mantissa it multiplies, and never reaches an int conversion). */
static inline float pow2(float k) {
    k = k > -127.0f ? (k > 127.0f ? 127.0f : k) : -127.0f;
    float s = bits_to_float(((int32_t)k + 127) << 23);
    return k <= -127.0f ? 0.0f : s;
}

/* (p, n) with e^x = p·2^n for x ≤ −XMIN. x < XMIN (−inf included) is masked, (0, EMPTY): below,
 * the three-part ln2 no longer makes n·ln2 exact. A row whose mass lies near or below XMIN (or above
 * −XMIN) is not computed from these terms: see softmax_2p_extexp; the shifted x − μ of the other
 * variants are < XMIN only where e^(x − μ) is 0 in float32 anyway. */
static inline float extexp(float x, float *n_out, const consts *c) {
    int masked = x < XMIN;
    float n = rintf(x * c->log2e);
    n = masked ? 0.0f : n;
    float t = x - n * c->ln2_hi;
    t = t - n * c->ln2_mid;
    t = t - n * c->ln2_lo;
    float p = c->poly[0];
    for (int i = 1; i < 6; i++) p = p * t + c->poly[i];
    *n_out = masked ? EMPTY : n;
    return masked ? 0.0f : p;
}

static inline float exp_(float x, const consts *c) {
    float n;
    float p = extexp(x, &n, c);
    return x < -104.0f ? 0.0f : p * pow2(n); /* e^x < 2^−150 rounds to 0 in float32 */
}

static float row_max(const float *x, int64_t v) {
    float m[LANES];
    for (int l = 0; l < LANES; l++) m[l] = -INFINITY;
    int64_t j = 0;
    for (; j + LANES <= v; j += LANES)
        for (int l = 0; l < LANES; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    float mu = -INFINITY;
    for (int l = 0; l < LANES; l++) mu = m[l] > mu ? m[l] : mu;
    for (; j < v; j++) mu = x[j] > mu ? x[j] : mu;
    /* a fully masked row: shift 0. +inf stays, so e^(x − μ) is NaN at the +inf entries and the sum
     * (and with it the row) is NaN; a NaN entry is skipped here but makes the sum NaN. */
    return mu == -INFINITY ? 0.0f : mu;
}

/* 1/σ: 0 for an empty (fully masked) sum, NaN for a NaN sum so that the whole row comes out NaN */
static inline float inverse(double sigma) {
    return sigma == 0.0 ? 0.0f : (float)(1.0 / sigma);
}

/* the next block: BLOCK entries, or the whole lanes left (0 when fewer than LANES remain) */
static inline int64_t block_len(int64_t left) {
    return left >= BLOCK ? BLOCK : left / LANES * LANES;
}

/* e^(x − μ) of one element, written to y too when y is not NULL (the reload variant's pass 2) */
static inline float term(const float *x, float *y, int64_t j, float mu, const consts *c) {
    float e = exp_(x[j] - mu, c);
    if (y) y[j] = e;
    return e;
}

static float sum_exp(const float *x, int64_t v, float mu, float *y, const consts *c) {
    /* Σ e^(x − μ): float lanes within a block of BLOCK entries, then double totals, so the
     * rounding error grows with BLOCK / LANES + v / BLOCK additions rather than v / LANES */
    double tot = 0.0;
    int64_t j = 0;
    for (int64_t len; (len = block_len(v - j)) > 0; j += len) {
        float s[LANES] = {0};
        for (int64_t k = 0; k < len; k += LANES)
            for (int l = 0; l < LANES; l++) s[l] += term(x, y, j + k + l, mu, c);
        for (int l = 0; l < LANES; l++) tot += s[l];
    }
    for (; j < v; j++) tot += term(x, y, j, mu, c);
    return (float)tot;
}

/* K2 (a): max; Σ e^(x − μ); y = e^(x − μ)/σ. 3 reads + 1 write. */
void softmax_3p_recompute(const float *x, float *y, int64_t rows, int64_t v, const consts *c) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * v;
        float *yr = y + r * v;
        float mu = row_max(xr, v);                              /* pass 1 */
        float sigma = sum_exp(xr, v, mu, NULL, c);              /* pass 2 */
        float inv = inverse(sigma);
        for (int64_t j = 0; j < v; j++) yr[j] = exp_(xr[j] - mu, c) * inv; /* pass 3 */
    }
}

/* K2 (b): max; y = e^(x − μ) while summing σ; y /= σ. 3 reads + 2 writes. */
void softmax_3p_reload(const float *x, float *y, int64_t rows, int64_t v, const consts *c) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * v;
        float *yr = y + r * v;
        float mu = row_max(xr, v);                              /* pass 1 */
        float sigma = sum_exp(xr, v, mu, yr, c);                /* pass 2 */
        float inv = inverse(sigma);
        for (int64_t j = 0; j < v; j++) yr[j] *= inv;           /* pass 3 */
    }
}

/* (m, e) += p·2^n, both scales ≤ 1 so nothing overflows */
static inline void add_ext(float *m, float *e, float p, float n) {
    float top = n > *e ? n : *e;
    *m = *m * pow2(*e - top) + p * pow2(n - top);
    *e = top;
}

/* K2, the two-pass algorithm: Σ e^x as (m, e) pairs, no max pass; y = (p/m_Σ)·2^(n − e_Σ).
 * 2 reads + 1 write. Blocks of lanes as in sum_exp, merged into a double mantissa.
 * A row whose sum is not a positive number with exponent e_Σ in [(XMIN + 128)·log2 e, −XMIN·log2 e]
 * (an entry above −XMIN, every entry below XMIN + 128 = −19,872, NaN, +inf or all −inf) is computed
 * again by the three-pass recompute after pass 2: three more reads for that row only, nothing in the
 * loops. (Branching to it before pass 2 instead made GCC compile pass 2 2.5× slower.) */
void softmax_2p_extexp(const float *x, float *y, int64_t rows, int64_t v, const consts *c) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * v;
        float *yr = y + r * v;
        double ms = 0.0;
        float es = EMPTY;
        int64_t j = 0;
        for (int64_t len; (len = block_len(v - j)) > 0; j += len) { /* pass 1 */
            float m[LANES] = {0}, e[LANES];
            for (int l = 0; l < LANES; l++) e[l] = EMPTY;
            for (int64_t k = 0; k < len; k += LANES)
                for (int l = 0; l < LANES; l++) {
                    float n;
                    float p = extexp(xr[j + k + l], &n, c);
                    add_ext(&m[l], &e[l], p, n);
                }
            for (int l = 0; l < LANES; l++) {
                float top = e[l] > es ? e[l] : es;
                ms = ms * pow2(es - top) + (double)m[l] * pow2(e[l] - top);
                es = top;
            }
        }
        for (; j < v; j++) {
            float n;
            float p = extexp(xr[j], &n, c);
            float top = n > es ? n : es;
            ms = ms * pow2(es - top) + (double)p * pow2(n - top);
            es = top;
        }
        float inv = ms > 0.0 ? (float)(1.0 / ms) : 0.0f;
        for (j = 0; j < v; j++) {                               /* pass 2 */
            float n;
            float p = extexp(xr[j], &n, c);
            yr[j] = p * inv * pow2(n - es);
        }
        if (!(ms > 0.0 && es >= (XMIN + 128.0f) * c->log2e && es <= -XMIN * c->log2e))
            softmax_3p_recompute(xr, yr, 1, v, c); /* out of the reduction's range: redo the row */
    }
}

/* Online sums count in units of e^0 as exp_ computes it (`one`: the polynomial is not exactly 1
 * at 0), so a term moved to a new maximum is scaled by exp_(m − m')/one and y = e^(x − m)/d stays
 * consistent: a row with one finite entry gives exactly 1. */
static inline float rescale(float d, float from, float to, float inv_one, const consts *c) {
    return from == to ? d : d * exp_(from - to, c) * inv_one;
}

/* (m, d) += e^x: one exponential, of −|x − m|, whichever of the two is larger */
static inline void add_online(float *m, float *d, float x, float one, float inv_one, const consts *c) {
    float g = exp_(-fabsf(x - *m), c);
    int up = x > *m;
    *d = up ? *d * g * inv_one + one : *d + g;
    *m = up ? x : *m;
}

/* K3, online softmax: running max and rescaled sum in one read; y = e^(x − m)/d. 2 reads + 1 write. */
void softmax_2p_online(const float *x, float *y, int64_t rows, int64_t v, const consts *c) {
    const float one = exp_(0.0f, c), inv_one = 1.0f / one;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * v;
        float *yr = y + r * v;
        float ms = -INFINITY;
        double ds = 0.0;
        int64_t j = 0;
        for (int64_t len; (len = block_len(v - j)) > 0; j += len) { /* pass 1 */
            float m[LANES], d[LANES] = {0};
            for (int l = 0; l < LANES; l++) m[l] = -FLT_MAX; /* finite: |x − m| is never inf − inf */
            for (int64_t k = 0; k < len; k += LANES)
                for (int l = 0; l < LANES; l++) add_online(&m[l], &d[l], xr[j + k + l], one, inv_one, c);
            for (int l = 0; l < LANES; l++) {
                if (d[l] == 0.0f) continue; /* an all −inf lane */
                float top = m[l] > ms ? m[l] : ms;
                ds = (ms == top ? ds : ds * exp_(ms - top, c) * inv_one) + rescale(d[l], m[l], top, inv_one, c);
                ms = top;
            }
        }
        for (; j < v; j++) {
            if (xr[j] == -INFINITY) continue;
            float top = xr[j] > ms ? xr[j] : ms;
            ds = (ms == top ? ds : ds * exp_(ms - top, c) * inv_one) + exp_(xr[j] - top, c);
            ms = top;
        }
        /* +inf: the lanes' |x − m| trick gave e^(inf − inf) the value 1; torch's (and the recurrence's) is NaN */
        if (ms == INFINITY) ds = NAN;
        float shift = ms == -INFINITY ? 0.0f : ms;
        float inv = inverse(ds);
        for (j = 0; j < v; j++) yr[j] = exp_(xr[j] - shift, c) * inv; /* pass 2 */
    }
}
