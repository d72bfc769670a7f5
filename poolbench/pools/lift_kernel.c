/* LiftDownPool's native CPU kernel: float32, channels-last, the default branch structure
 * (depthwise K-tap conv, channel-wise 1x1 weight, no biases). Loaded by lift_native.py, which
 * compiles it on first use; the math is docs/liftpool.md's (Eq. 4-5), the same as lift.py's
 * reference:
 *
 *   P(e) = tanh(w1p * relu(conv_K(pad(e), wp)))     d = o - P(e)
 *   U(d) = tanh(w1u * relu(conv_K(pad(d), wu)))     s = e + U(d)
 *
 * Why a kernel: the torch fast path (lift_fast.py) needs ~20 memory passes per lifting (split,
 * pad, conv, tanh, add, and their backwards); here one line of 2n positions (C channels each,
 * contiguous) is lifted in L1-sized scratch, and the backward recomputes the line instead of
 * reading saved intermediates. Channels are the vector axis (C = 32..512 in the backbones).
 *
 * Padding is an index table (n + K - 1 source positions of the padded line, -1 = zero), built
 * by lift_ops._pad_index, so every padding mode of the reference is the same code here.
 */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define KMAX 16   /* lift_native.usable refuses longer kernels */
#define VB 16     /* channel block: lift_native.usable asks for C % VB == 0 */
/* The vector width is the target's own (16 floats with AVX-512, 8 with AVX, 4 otherwise): a
 * GCC vector wider than the target's registers has its comparisons (every ReLU, the tanh's
 * clamps) lowered lane by lane, which made the AVX2 build 2.5x slower. A block of VB channels
 * is VB / VW vectors. */
#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#else
#define VW 4
#endif

/* one vector of channels as a GCC/Clang vector: its sums stay in registers on any target */
typedef float vf __attribute__((vector_size(4 * VW)));
typedef int vi __attribute__((vector_size(4 * VW)));
static inline vf ld(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }

typedef struct {
    int n, C, K;
    const int *idx;                   /* padded index table, n + K - 1 entries */
    const float *wp, *w1p, *wu, *w1u; /* taps (K, C) and 1x1 weights (C) of P and U */
    const float *zero;                /* C zeros: the padded positions of mode "zeros" */
} lifting_t;

/* per-line scratch, n x C each: D, S (backward only), ReLU outputs and tanh of P and U,
 * and the backward's gradients of s, d and the pre-activation */
enum { D_, S_, RP_, TP_, RU_, TU_, GS_, GD_, GZ_, NBUF };

typedef struct {
    float *buf[NBUF];
    float *gsum;                      /* 2 (K + 1) C: one sample's parameter gradient sums */
    const float **ptr;                /* the padded line's positions */
    float *zero;
    void *mem;
} scratch_t;

/* tanh of a block: t = 1 - 2 / (e^{2u} + 1) with e^{2u} = 2^m 2^f (m = round(y), f = y - m,
 * y = 2u log2(e)), 2^f = e^g (g = f ln 2, |g| <= ln2 / 2) by a degree-5 polynomial fitted to
 * the relative error (2.4e-7 in float32, i.e. <= 1.2e-7 absolute in t); |u| >= 9 is +-1 in
 * float32. Inline, so no call per block and no dependency on the C library's vector math. */
static inline vf tanh_block(vf u) {
    const vf zero = {0}, lim = zero + 9.0f;
    u = vsel(u > lim, lim, u);
    u = vsel(u < -lim, -lim, u);
    const vf y = u * 2.8853900817779268f;                     /* 2 / ln 2 */
    const vi m = __builtin_convertvector(y + 32.5f, vi) - 32; /* round(y), y + 32.5 > 0 */
    const vf g = (y - __builtin_convertvector(m, vf)) * 0.6931471805599453f;
    vf p = 0.041915028541615974f + g * 0.008291716684967336f;
    p = 0.1666766283772619f + g * p;
    p = 0.4999889907580325f + g * p;
    p = 0.9999996661619811f + g * p;
    p = 1.0000000710296995f + g * p;
    const vf e = p * (vf)((m + 127) << 23);                  /* times 2^m */
    return 1.0f - 2.0f / (e + 1.0f);
}

/* every position of the padded line whose unpadded positions are a + i*sa */
static void padded(const lifting_t *L, const float *a, long sa, const float **p) {
    for (int q = 0; q < L->n + L->K - 1; q++)
        p[q] = L->idx[q] < 0 ? L->zero : a + L->idx[q] * sa;
}

/* out[j] = base[j] + sign * t[j], t = tanh(w1 r), r = relu(conv_K(p)); keeps r and t
 * unless r is NULL.
 * Channels go VW at a time (C % VB == 0, lift_native.usable): the vector's tap sum stays
 * in registers, and the fixed-size loops vectorise on any target. */
static inline __attribute__((always_inline)) void
branch_k(const lifting_t *L, const float *const *p, const float *wk, const float *w1,
         const float *base, long sb, float sign, float *out, long so, float *r, float *t,
         const int K) {
    const int n = L->n, C = L->C;
    const vf zero = {0};
    /* two positions per step: two independent FMA + tanh chains (the chain is long, ~80 cycles) */
    for (int j = 0; j < n; j += 2) {
        const int two = j + 1 < n;
        const float *const *pj = p + j;
        for (int c0 = 0; c0 < C; c0 += VW) {
            vf z0 = {0}, z1 = {0};
            for (int k = 0; k < K; k++) {
                const vf w = ld(wk + (long)k * C + c0);
                z0 += w * ld(pj[k] + c0);
                if (two) z1 += w * ld(pj[k + 1] + c0);
            }
            const vf w1c = ld(w1 + c0);
            const vf r0 = vsel(z0 > zero, z0, zero), r1 = vsel(z1 > zero, z1, zero);   /* relu */
            const vf t0 = tanh_block(w1c * r0), t1 = tanh_block(w1c * r1);
            if (r) {                     /* kept for the backward only */
                st(r + (long)j * C + c0, r0);
                st(t + (long)j * C + c0, t0);
            }
            st(out + j * so + c0, ld(base + j * sb + c0) + sign * t0);
            if (two) {
                if (r) {
                    st(r + (long)(j + 1) * C + c0, r1);
                    st(t + (long)(j + 1) * C + c0, t1);
                }
                st(out + (j + 1) * so + c0, ld(base + (j + 1) * sb + c0) + sign * t1);
            }
        }
    }
}

/* the tap loop unrolled for the common kernel sizes */
static void branch(const lifting_t *L, const float *const *p, const float *wk, const float *w1,
                   const float *base, long sb, float sign, float *out, long so, float *r,
                   float *t) {
    switch (L->K) {
    case 3: branch_k(L, p, wk, w1, base, sb, sign, out, so, r, t, 3); break;
    case 5: branch_k(L, p, wk, w1, base, sb, sign, out, so, r, t, 5); break;
    case 7: branch_k(L, p, wk, w1, base, sb, sign, out, so, r, t, 7); break;
    default: branch_k(L, p, wk, w1, base, sb, sign, out, so, r, t, L->K);
    }
}

/* the ReLU outputs of a branch only: r = relu(conv_K(p)) */
static void branch_relu(const lifting_t *L, const float *const *p, const float *wk, float *r) {
    const int n = L->n, C = L->C, K = L->K;
    const vf zero = {0};
    for (int j = 0; j < n; j++)
        for (int c0 = 0; c0 < C; c0 += VW) {
            vf zv = {0};
            for (int k = 0; k < K; k++) zv += ld(wk + (long)k * C + c0) * ld(p[j + k] + c0);
            st(r + (long)j * C + c0, vsel(zv > zero, zv, zero));
        }
}

/* one lifting of a line of 2n positions x + l*sx: d = o - P(e) at d + j*sd, s = e + U(d) at
 * s + j*ss (e = x[2j], o = x[2j+1]) */
static void line_compute(const lifting_t *L, const float *x, long sx, float *d, long sd,
                         float *s, long ss, scratch_t *W, int keep) {
    padded(L, x, 2 * sx, W->ptr);
    branch(L, W->ptr, L->wp, L->w1p, x + sx, 2 * sx, -1.0f, d, sd, keep ? W->buf[RP_] : NULL,
           W->buf[TP_]);
    padded(L, d, sd, W->ptr);
    branch(L, W->ptr, L->wu, L->w1u, x, 2 * sx, 1.0f, s, ss, keep ? W->buf[RU_] : NULL,
           W->buf[TU_]);
}

/* forward of one line; acc[0] += sum (s - o)^2, acc[1] += sum d^2 (acc may be NULL) */
static void line_forward(const lifting_t *L, const float *x, long sx, float *s, long ss,
                         float *d, long sd, scratch_t *W, double *acc) {
    const int n = L->n, C = L->C;
    line_compute(L, x, sx, d, sd, s, ss, W, 0);
    if (!acc) return;
    /* one accumulator per vector of a block: lane l of su[b] sums channel b VW + l of every
     * block, so these sums (and their order) are the same whatever VW is */
    vf su[VB / VW] = {{0}}, sp[VB / VW] = {{0}};
    for (int j = 0; j < n; j++) {
        const float *sv = s + j * ss, *dv = d + j * sd, *ov = x + (2L * j + 1) * sx;
        for (int c = 0; c < C; c += VW) {
            const int b = (c / VW) % (VB / VW);
            const vf q = ld(sv + c) - ld(ov + c), dd = ld(dv + c);
            su[b] += q * q;
            sp[b] += dd * dd;
        }
    }
    for (int b = 0; b < VB / VW; b++)
        for (int c = 0; c < VW; c++) {
            acc[0] += su[b][c];
            acc[1] += sp[b][c];
        }
}

/* backward of out = base + sign * tanh(w1 relu(conv_K(p))) given the gradient gt of out:
 * adds the gradient of the branch input into ga (strided: ga + i*sga) and the parameter
 * gradients into gwk (K, C) and gw1 (C) */
static inline __attribute__((always_inline)) void
branch_backward_k(const lifting_t *L, const float *const *p, const float *r, const float *t,
                  const float *gt, float sign, const float *wk, const float *w1, float *ga,
                  long sga, float *gz, float *gwk, float *gw1, const int K) {
    const int n = L->n, C = L->C;
    for (int c0 = 0; c0 < C; c0 += VW) {   /* gradient of the pre-activation, and of w1 */
        vf acc = {0};
        const vf w1c = ld(w1 + c0), zero = {0};
        for (int j = 0; j < n; j++) {
            const long o = (long)j * C + c0;
            const vf tv = ld(t + o), rv = ld(r + o);
            const vf q = sign * ld(gt + o) * (1.0f - tv * tv);
            acc += q * rv;
            st(gz + o, vsel(rv > zero, q * w1c, zero));   /* the ReLU mask */
        }
        st(gw1 + c0, ld(gw1 + c0) + acc);
    }
    for (int c0 = 0; c0 < C; c0 += VW) {   /* taps: sum_j gz[j] * p[j + k], K independent sums */
        vf acc[KMAX];
        for (int k = 0; k < K; k++) acc[k] = (vf){0};
        for (int j = 0; j < n; j++) {
            const vf g = ld(gz + (long)j * C + c0);
            for (int k = 0; k < K; k++) acc[k] += g * ld(p[j + k] + c0);
        }
        for (int k = 0; k < K; k++) {
            float *g = gwk + (long)k * C + c0;
            st(g, ld(g) + acc[k]);
        }
    }
    /* input: padded position q collects wk[k] gz[q - k], then goes to its source idx[q];
     * interior positions (every tap in range) with the tap count fixed */
    for (int q = 0; q < n + K - 1; q++) {
        const int i = L->idx[q];
        if (i < 0) continue;
        float *gi = ga + i * sga;
        if (q >= K - 1 && q < n) {
            for (int c0 = 0; c0 < C; c0 += VW) {
                vf acc = ld(gi + c0);
                for (int k = 0; k < K; k++)
                    acc += ld(wk + (long)k * C + c0) * ld(gz + (long)(q - k) * C + c0);
                st(gi + c0, acc);
            }
            continue;
        }
        const int klo = q - n + 1 > 0 ? q - n + 1 : 0, khi = q < K - 1 ? q : K - 1;
        for (int c0 = 0; c0 < C; c0 += VW) {
            vf acc = ld(gi + c0);
            for (int k = klo; k <= khi; k++)
                acc += ld(wk + (long)k * C + c0) * ld(gz + (long)(q - k) * C + c0);
            st(gi + c0, acc);
        }
    }
}

static void branch_backward(const lifting_t *L, const float *const *p, const float *r,
                            const float *t, const float *gt, float sign, const float *wk,
                            const float *w1, float *ga, long sga, float *gz, float *gwk,
                            float *gw1) {
    switch (L->K) {
    case 3: branch_backward_k(L, p, r, t, gt, sign, wk, w1, ga, sga, gz, gwk, gw1, 3); break;
    case 5: branch_backward_k(L, p, r, t, gt, sign, wk, w1, ga, sga, gz, gwk, gw1, 5); break;
    case 7: branch_backward_k(L, p, r, t, gt, sign, wk, w1, ga, sga, gz, gwk, gw1, 7); break;
    default: branch_backward_k(L, p, r, t, gt, sign, wk, w1, ga, sga, gz, gwk, gw1, L->K);
    }
}

/* the backward's buffers of a line from its saved outputs s, d instead of a recomputation:
 * t_p = o - d and t_u = s - e (to float rounding: no tanh), and the ReLU outputs */
static void line_restore(const lifting_t *L, const float *x, long sx, const float *s, long ss,
                         const float *d, long sd, scratch_t *W) {
    const int n = L->n, C = L->C;
    float *restrict D = W->buf[D_], *restrict S = W->buf[S_];
    float *restrict TP = W->buf[TP_], *restrict TU = W->buf[TU_];
    for (int j = 0; j < n; j++) {
        const long o = (long)j * C;
        const float *restrict ev = x + (2L * j) * sx, *restrict ov = x + (2L * j + 1) * sx;
        const float *restrict sv = s + j * ss, *restrict dv = d + j * sd;
        for (int c = 0; c < C; c += VW) {
            const vf d0 = ld(dv + c), s0 = ld(sv + c);
            st(D + o + c, d0);
            st(S + o + c, s0);
            st(TP + o + c, ld(ov + c) - d0);
            st(TU + o + c, s0 - ld(ev + c));
        }
    }
    padded(L, x, 2 * sx, W->ptr);
    branch_relu(L, W->ptr, L->wp, W->buf[RP_]);
    padded(L, D, C, W->ptr);
    branch_relu(L, W->ptr, L->wu, W->buf[RU_]);
}

/* backward of one line: gs/gd the incoming gradients of s and d (NULL: zero), ku/kp the loss
 * scales (d c_u / d (s - o) = ku (s - o), d c_p / d d = kp d); writes the gradient of x at
 * gx + l*sgx; gparam: gwp, gw1p, gwu, gw1u (float accumulators). so/do: the line's saved
 * outputs s and d (strides sso, sdo), or NULL to recompute them. */
static void line_backward(const lifting_t *L, const float *x, long sx, const float *gs, long sgs,
                          const float *gd, long sgd, float ku, float kp, float *gx, long sgx,
                          const float *so, long sso, const float *dout, long sdo, scratch_t *W,
                          float *gparam) {
    const int n = L->n, C = L->C, K = L->K;
    float *gwp = gparam, *gw1p = gparam + (long)K * C;
    float *gwu = gw1p + C, *gw1u = gwu + (long)K * C;
    float *restrict D = W->buf[D_], *restrict S = W->buf[S_];
    float *restrict GS = W->buf[GS_], *restrict GD = W->buf[GD_];
    if (so) line_restore(L, x, sx, so, sso, dout, sdo, W);
    else line_compute(L, x, sx, D, C, S, C, W, 1);
    for (int j = 0; j < n; j++) {     /* total gradients of s (with c_u) and d (with c_p) */
        const long o = (long)j * C;
        const float *restrict ov = x + (2L * j + 1) * sx;
        const float *restrict gsv = gs ? gs + j * sgs : L->zero;
        const float *restrict gdv = gd ? gd + j * sgd : L->zero;
        for (int c = 0; c < C; c += VW) {
            st(GS + o + c, ld(gsv + c) + ku * (ld(S + o + c) - ld(ov + c)));
            st(GD + o + c, ld(gdv + c) + kp * ld(D + o + c));
        }
    }
    /* U: s = e + U(d) */
    padded(L, D, C, W->ptr);
    branch_backward(L, W->ptr, W->buf[RU_], W->buf[TU_], GS, 1.0f, L->wu, L->w1u, GD, C,
                    W->buf[GZ_], gwu, gw1u);
    /* o: through d = o - P(e), and c_u's -(s - o); e: that of s, then P's */
    for (int j = 0; j < n; j++) {
        const long o = (long)j * C;
        const float *restrict ov = x + (2L * j + 1) * sx;
        float *restrict go = gx + (2L * j + 1) * sgx, *restrict ge = gx + (2L * j) * sgx;
        for (int c = 0; c < C; c += VW) {
            st(go + c, ld(GD + o + c) - ku * (ld(S + o + c) - ld(ov + c)));
            st(ge + c, ld(GS + o + c));
        }
    }
    /* P: d = o - P(e) */
    padded(L, x, 2 * sx, W->ptr);
    branch_backward(L, W->ptr, W->buf[RP_], W->buf[TP_], GD, -1.0f, L->wp, L->w1p, gx, 2 * sgx,
                    W->buf[GZ_], gwp, gw1p);
}

static int scratch(scratch_t *W, int n, int C, int K) {
    const long m = (long)n * C;
    char *mem = malloc(sizeof(float) * (m * NBUF + (long)C * (2 * K + 3))
                       + sizeof(float *) * (n + K) + 64);
    if (!mem) return -1;
    float *f = (float *)mem;
    for (int i = 0; i < NBUF; i++) W->buf[i] = f + i * m;
    W->gsum = f + NBUF * m;
    memset(W->gsum, 0, sizeof(float) * 2 * (K + 1) * C);
    W->zero = W->gsum + 2L * C * (K + 1);
    memset(W->zero, 0, sizeof(float) * C);
    W->ptr = (const float **)(W->zero + C);
    W->mem = mem;
    return 0;
}

/* the vertical lifting of one column into the sum of its selected bands: y (+)= s (sel & 1)
 * + d (sel & 2), added when `add` (the second column half), else written */
static void band_sum(const lifting_t *L, const float *x, long sx, int sel, float *y, long sy,
                     int add, scratch_t *W, double *acc) {
    const int n = L->n, C = L->C;
    const float *restrict S = W->buf[S_], *restrict D = W->buf[D_];
    line_forward(L, x, sx, W->buf[S_], C, W->buf[D_], C, W, acc);
    for (int j = 0; j < n; j++) {
        float *restrict yv = y + j * sy;
        const long o = (long)j * C;
        for (int c = 0; c < C; c += VW) {
            vf v = {0};
            if (add) v = ld(yv + c);        /* y is uninitialised before the first half */
            if (sel & 1) v += ld(S + o + c);
            if (sel & 2) v += ld(D + o + c);
            st(yv + c, v);
        }
    }
}

/* The 2-D layer (or the 1-D one: two_d = 0) for samples [i0, i1) of a channels-last batch
 * x (N, H, W, C). Horizontal lifting of every row into sd = [s; d] ((2, N, H, W/2, C)); 2-D:
 * vertical lifting of every column of s -> (LL, LH), of d -> (HL, HH) ((N, H/2, W/2, C)).
 * With y (2-D only) the bands are not written: y = the sum of the bands selected by the bits
 * of sel (1 LL, 2 LH, 4 HL, 8 HH), (N, H/2, W/2, C).
 * ss (6 per sample, may be NULL): sums of squares hu, hp, vu_s, vp_s, vu_d, vp_d.
 * Returns 0, or -1 when out of memory. */
static int forward_range(const float *x, int N, int H, int W, int C, int K, int two_d,
                         const int *idx_w, const int *idx_h, const float *wp, const float *w1p,
                         const float *wu, const float *w1u, float *sd, float *ll, float *lh,
                         float *hl, float *hh, float *y, int sel, double *ss, int i0, int i1) {
    const int w2 = W / 2, h2 = H / 2;
    scratch_t Ws, *B = &Ws;
    if (K > KMAX || scratch(B, two_d && h2 > w2 ? h2 : w2, C, K)) return -1;
    lifting_t Lw = {w2, C, K, idx_w, wp, w1p, wu, w1u, B->zero};
    lifting_t Lh = {h2, C, K, idx_h, wp, w1p, wu, w1u, B->zero};
    const long plane = (long)H * w2 * C;          /* one sample of s or d */
    const long band = (long)h2 * w2 * C;          /* one sample of a 2-D band */
    for (int i = i0; i < i1; i++) {
        double *acc = ss ? ss + 6L * i : NULL;
        if (acc) memset(acc, 0, sizeof(double) * 6);
        float *s = sd + i * plane, *d = sd + (N + (long)i) * plane;
        for (int h = 0; h < H; h++)
            line_forward(&Lw, x + ((long)i * H + h) * W * C, C, s + (long)h * w2 * C, C,
                         d + (long)h * w2 * C, C, B, acc);
        if (!two_d) continue;
        for (int b = 0; b < w2; b++) {
            const long o = (long)b * C, st = (long)w2 * C;
            if (y) {
                float *yo = y + i * band + o;
                band_sum(&Lh, s + o, st, sel & 3, yo, st, 0, B, acc ? acc + 2 : NULL);
                band_sum(&Lh, d + o, st, sel >> 2, yo, st, 1, B, acc ? acc + 4 : NULL);
                continue;
            }
            line_forward(&Lh, s + o, st, ll + i * band + o, st, lh + i * band + o, st, B,
                         acc ? acc + 2 : NULL);
            line_forward(&Lh, d + o, st, hl + i * band + o, st, hh + i * band + o, st, B,
                         acc ? acc + 4 : NULL);
        }
    }
    free(B->mem);
    return 0;
}

/* Backward of lift_forward for samples [i0, i1): g_* the band gradients (NULL: zero; 1-D:
 * g_ll, g_lh are those of s and d), k[6] the loss scales (hu, hp, vu_s, vp_s, vu_d, vp_d),
 * gx (N, H, W, C) the input's gradient, gparam (2 (K C + C) doubles: gwp, gw1p, gwu, gw1u)
 * accumulated. Returns 0, or -1 when out of memory. */
static int backward_range(const float *x, int N, int H, int W, int C, int K, int two_d,
                          const int *idx_w, const int *idx_h, const float *wp, const float *w1p,
                          const float *wu, const float *w1u, const float *sd,
                          const float *g_ll, const float *g_lh, const float *g_hl,
                          const float *g_hh, const float *k, float *gx, double *gparam, int i0,
                          int i1) {
    const int w2 = W / 2, h2 = H / 2;
    scratch_t Ws, *B = &Ws;
    if (K > KMAX || scratch(B, two_d && h2 > w2 ? h2 : w2, C, K)) return -1;
    lifting_t Lw = {w2, C, K, idx_w, wp, w1p, wu, w1u, B->zero};
    lifting_t Lh = {h2, C, K, idx_h, wp, w1p, wu, w1u, B->zero};
    const long plane = (long)H * w2 * C, band = (long)h2 * w2 * C;
    float *gsd = two_d ? malloc(sizeof(float) * 2 * plane) : NULL;
    if (two_d && !gsd) { free(B->mem); return -1; }
    for (int i = i0; i < i1; i++) {
        const float *gs, *gd;
        long sg = C;
        if (two_d) {
            const float *s = sd + i * plane, *d = sd + (N + (long)i) * plane;
            const long st = (long)w2 * C;
            for (int b = 0; b < w2; b++) {
                const long o = (long)b * C, go = i * band + o;
                line_backward(&Lh, s + o, st, g_ll ? g_ll + go : NULL, st,
                              g_lh ? g_lh + go : NULL, st, k[2], k[3], gsd + o, st, NULL, 0,
                              NULL, 0, B, B->gsum);
                line_backward(&Lh, d + o, st, g_hl ? g_hl + go : NULL, st,
                              g_hh ? g_hh + go : NULL, st, k[4], k[5], gsd + plane + o, st, NULL, 0,
                              NULL, 0, B, B->gsum);
            }
            gs = gsd;
            gd = gsd + plane;
        } else {
            gs = g_ll ? g_ll + i * plane : NULL;
            gd = g_lh ? g_lh + i * plane : NULL;
        }
        for (int h = 0; h < H; h++) {
            const long o = (long)h * w2 * C;
            line_backward(&Lw, x + ((long)i * H + h) * W * C, C, gs ? gs + o : NULL, sg,
                          gd ? gd + o : NULL, sg, k[0], k[1], gx + ((long)i * H + h) * W * C, C,
                          sd + i * plane + o, C, sd + (N + (long)i) * plane + o, C, B, B->gsum);
        }
        /* one sample's float sums into the double accumulators (float over ~100 lines only) */
        for (long q = 0; q < 2L * (K + 1) * C; q++) {
            gparam[q] += B->gsum[q];
            B->gsum[q] = 0.0f;
        }
    }
    free(gsd);
    free(B->mem);
    return 0;
}

/* Whether the batch is split over OpenMP threads: built with -fopenmp, the kernel runs in the
 * OpenMP runtime torch has already loaded (the same libgomp.so.1), so its threads are torch's
 * and never oversubscribe the cores. */
int lift_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* a thread's share of [0, N): static, so the partition (and every sum) is deterministic */
#ifdef _OPENMP
#define SPLIT(threads, body)                                                                  \
    _Pragma("omp parallel num_threads(threads) reduction(|:rc)")                              \
    {                                                                                         \
        const int t = omp_get_thread_num(), T = omp_get_num_threads();                        \
        const int i0 = (int)((long)N * t / T), i1 = (int)((long)N * (t + 1) / T);             \
        body;                                                                                 \
    }
#else
#define SPLIT(threads, body)                                                                  \
    {                                                                                         \
        const int t = 0, i0 = 0, i1 = N;                                                      \
        (void)threads;                                                                        \
        body;                                                                                 \
    }
#endif

/* forward_range over the whole batch on `threads` threads. Returns 0, or -1 when out of
 * memory. */
int lift_forward(const float *x, int N, int H, int W, int C, int K, int two_d,
                 const int *idx_w, const int *idx_h, const float *wp, const float *w1p,
                 const float *wu, const float *w1u, float *sd, float *ll, float *lh, float *hl,
                 float *hh, float *y, int sel, double *ss, int threads) {
    int rc = 0;
    SPLIT(threads, (void)t; rc |= forward_range(x, N, H, W, C, K, two_d, idx_w, idx_h, wp, w1p,
                   wu, w1u, sd, ll, lh, hl, hh, y, sel, ss, i0, i1))
    return rc;
}

/* backward_range over the whole batch on `threads` threads; gparam holds one accumulator
 * (2 (K C + C) doubles) per thread, summed by the caller in thread order. */
int lift_backward(const float *x, int N, int H, int W, int C, int K, int two_d,
                  const int *idx_w, const int *idx_h, const float *wp, const float *w1p,
                  const float *wu, const float *w1u, const float *sd, const float *g_ll,
                  const float *g_lh, const float *g_hl, const float *g_hh, const float *k,
                  float *gx, double *gparam, int threads) {
    int rc = 0;
    const long size = 2L * ((long)K * C + C);
    SPLIT(threads, rc |= backward_range(x, N, H, W, C, K, two_d, idx_w, idx_h, wp, w1p, wu, w1u,
                   sd, g_ll, g_lh, g_hl, g_hh, k, gx, gparam + t * size, i0, i1))
    return rc;
}
