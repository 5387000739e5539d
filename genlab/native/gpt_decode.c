/* One-token GPT decoding on the CPU, in C: the whole step (embedding, every block, the head)
 * in one call, for a single sequence in float32.
 *
 * The same computation as genlab.models.lm.decode.decode_torch. At the sizes genlab trains on a
 * CPU a token costs well under a million multiply-adds, so a step written with torch
 * operations is bound by their per-call cost (Python, dispatch, allocation: ~80 calls a
 * token at 4 layers); here it is bound by reading the weights once. Built at first use by
 * genlab.native with the machine's compiler (-O3 -march=native: the inner loops vectorise
 * to its SIMD width, and the `omp simd` reductions too, with -fopenmp-simd: no OpenMP runtime);
 * without a compiler genlab keeps the torch path.
 *
 * Layouts (all contiguous float32): matrices are (in, out), i.e. nn.Linear's weight
 * transposed, so that y = x W walks each row of W once with a vectorised axpy; the KV cache
 * of a layer is (heads, context, head size), the memory of KVCache.k[layer][0].
 */

#include <math.h>
#include <stddef.h>
#include <string.h>

/* y (out) = x (in) W (in, out), or y += x W: four rows of W at a time, so that each pass over y
 * loads and stores it once for four multiply-adds (y does not fit in registers). Rows whose input
 * is exactly 0 are skipped: after ReLU^2 about half the MLP's hidden units are. */
static void gemv(const float *restrict x, const float *restrict w, int in, int out, float *restrict y,
                 int accumulate, int *restrict rows) {
    if (!accumulate) memset(y, 0, (size_t)out * sizeof(float));
    int n = 0;
    for (int i = 0; i < in; i++)
        if (x[i] != 0.0f) rows[n++] = i;
    int r = 0;
    for (; r + 4 <= n; r += 4) {
        const float x0 = x[rows[r]], x1 = x[rows[r + 1]], x2 = x[rows[r + 2]], x3 = x[rows[r + 3]];
        const float *restrict w0 = w + (size_t)rows[r] * out, *restrict w1 = w + (size_t)rows[r + 1] * out;
        const float *restrict w2 = w + (size_t)rows[r + 2] * out, *restrict w3 = w + (size_t)rows[r + 3] * out;
        for (int j = 0; j < out; j++) y[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j];
    }
    for (; r < n; r++) {
        const float xi = x[rows[r]];
        const float *restrict row = w + (size_t)rows[r] * out;
        for (int j = 0; j < out; j++) y[j] += xi * row[j];
    }
}

/* LayerNorm over n values without bias (torch's: biased variance, eps inside the root), times
 * gain g when given. */
static void layer_norm(const float *x, const float *g, int n, float eps, float *y) { /* may run in place */
    float mean = 0.0f, var = 0.0f;
#pragma omp simd reduction(+ : mean)
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
#pragma omp simd reduction(+ : var)
    for (int i = 0; i < n; i++) {
        const float d = x[i] - mean;
        var += d * d;
    }
    const float inv = 1.0f / sqrtf(var / (float)n + eps);
    for (int i = 0; i < n; i++) y[i] = (x[i] - mean) * inv * (g ? g[i] : 1.0f);
}

/* RoPE as genlab.models.lm.gpt.apply_rope: out_j = x_j cos_j + x_{(j + hs/2) mod hs} sin_j, with sin
 * signed (-sin on the first half, +sin on the second), times scale. In place over hs values. */
static void rope(float *restrict x, const float *restrict cos, const float *restrict sin, int hs, float scale,
                 float *restrict tmp) {
    const int half = hs / 2;
    for (int j = 0; j < hs; j++) tmp[j] = x[j] * cos[j] + x[(j + half) % hs] * sin[j];
    for (int j = 0; j < hs; j++) x[j] = tmp[j] * scale;
}

/* A model as gpt_decode_step reads it: sizes, options and the addresses of its weights and cache. The
 * same layout as genlab.models.lm.decode.NativeModel (ctypes), field for field.
 *
 * blocks: per layer 6 pointers: norm1 gain (C), qkv (C, 3C), attention proj (C, C), norm2 gain (C),
 *   fc (C, hidden), MLP proj (hidden, C). caches: per layer 2 pointers, keys and values (nh, context, hs).
 * wpe: learned positions (context, C), or NULL; rope_cos/rope_sin: (context, hs) tables, or NULL.
 * activation: 0 ReLU^2, 1 GELU (tanh approximation). softcap > 0: logits = cap tanh(logits / cap).
 * scratch: gpt_decode_scratch(n_embd, hidden, context) floats. */
typedef struct {
    int n_layer, n_embd, n_head, hidden, context, vocab, qk_norm, activation;
    float eps, softcap;
    const float *wte, *wpe, *rope_cos, *rope_sin;
    const float *const *blocks;
    float *const *caches;
    const float *norm_f, *head;
    float *scratch;
} gpt_model;

/* Scratch floats gpt_decode_step needs: x, its norm, q k v, the MLP's hidden units, the scores, a head,
 * and gemv's row list (hidden ints, the widest input). */
int gpt_decode_scratch(int n_embd, int hidden, int context) { return 6 * n_embd + 2 * hidden + context; }

/* One token through the model; writes next-token logits (vocab) and the token's keys and values at
 * position pos of each layer's cache. Returns 0, or -1 when pos is outside the context. */
int gpt_decode_step(const gpt_model *m, int token, int pos, float *logits) {
    const int n_layer = m->n_layer, n_embd = m->n_embd, n_head = m->n_head, hidden = m->hidden;
    const int context = m->context, vocab = m->vocab, qk_norm = m->qk_norm, activation = m->activation;
    const float eps = m->eps, softcap = m->softcap;
    const float *wte = m->wte, *wpe = m->wpe, *rope_cos = m->rope_cos, *rope_sin = m->rope_sin;
    const float *const *blocks = m->blocks;
    float *const *caches = m->caches;
    const float *norm_f = m->norm_f, *head = m->head;
    float *scratch = m->scratch;
    if (pos < 0 || pos >= context) return -1;
    const int C = n_embd, hs = n_embd / n_head;
    float *x = scratch, *xn = x + C, *qkv = xn + C, *h = qkv + 3 * C, *scores = h + hidden, *tmp = scores + context;
    int *rows = (int *)(tmp + hs);
    const float scale = 1.0f / sqrtf((float)hs);

    memcpy(x, wte + (size_t)token * C, (size_t)C * sizeof(float));
    if (wpe)
        for (int i = 0; i < C; i++) x[i] += wpe[(size_t)pos * C + i];

    for (int l = 0; l < n_layer; l++) {
        const float *const *w = blocks + 6 * l;
        float *kc = caches[2 * l], *vc = caches[2 * l + 1];

        /* attention: q, k, v of this token; q and k normalised per head, rotated, q scaled */
        layer_norm(x, w[0], C, eps, xn);
        gemv(xn, w[1], C, 3 * C, qkv, 0, rows);
        for (int hd = 0; hd < n_head; hd++) {
            float *q = qkv + hd * hs, *k = qkv + C + hd * hs, *v = qkv + 2 * C + hd * hs;
            if (qk_norm) {
                layer_norm(q, NULL, hs, eps, q);
                layer_norm(k, NULL, hs, eps, k);
            }
            if (rope_cos) {
                rope(q, rope_cos + (size_t)pos * hs, rope_sin + (size_t)pos * hs, hs, scale, tmp);
                rope(k, rope_cos + (size_t)pos * hs, rope_sin + (size_t)pos * hs, hs, 1.0f, tmp);
            } else {
                for (int j = 0; j < hs; j++) q[j] *= scale;
            }
            float *kh = kc + (size_t)hd * context * hs, *vh = vc + (size_t)hd * context * hs;
            memcpy(kh + (size_t)pos * hs, k, (size_t)hs * sizeof(float));
            memcpy(vh + (size_t)pos * hs, v, (size_t)hs * sizeof(float));
            /* softmax over the positions held, 0 .. pos */
            float top = -INFINITY;
            for (int t = 0; t <= pos; t++) {
                const float *kt = kh + (size_t)t * hs;
                float s = 0.0f;
#pragma omp simd reduction(+ : s)
                for (int j = 0; j < hs; j++) s += q[j] * kt[j];
                scores[t] = s;
                if (s > top) top = s;
            }
            float total = 0.0f;
#pragma omp simd reduction(+ : total)
            for (int t = 0; t <= pos; t++) {
                scores[t] = expf(scores[t] - top);
                total += scores[t];
            }
            float *y = xn + hd * hs; /* the heads' outputs side by side: the proj's input */
            memset(y, 0, (size_t)hs * sizeof(float));
            for (int t = 0; t <= pos; t++) {
                const float p = scores[t] / total, *vt = vh + (size_t)t * hs;
                for (int j = 0; j < hs; j++) y[j] += p * vt[j];
            }
        }
        gemv(xn, w[2], C, C, x, 1, rows); /* x += y W_proj */

        /* MLP */
        layer_norm(x, w[3], C, eps, xn);
        gemv(xn, w[4], C, hidden, h, 0, rows);
        if (activation == 0) {
            for (int i = 0; i < hidden; i++) h[i] = h[i] > 0.0f ? h[i] * h[i] : 0.0f;
        } else {
            for (int i = 0; i < hidden; i++) {
                const float u = h[i];
                h[i] = 0.5f * u * (1.0f + tanhf(0.7978845608028654f * (u + 0.044715f * u * u * u)));
            }
        }
        gemv(h, w[5], hidden, C, x, 1, rows); /* x += act(h) W_out */
    }
    layer_norm(x, norm_f, C, eps, xn);
    gemv(xn, head, C, vocab, logits, 0, rows);
    if (softcap > 0.0f)
        for (int i = 0; i < vocab; i++) logits[i] = softcap * tanhf(logits[i] / softcap);
    return 0;
}
