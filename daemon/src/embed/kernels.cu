// Fused CUDA kernels for the BERT encoder (see cuda_ops.rs), compiled to PTX by
// build.rs when the `cuda` feature is on. Each does in one pass what candle's generic
// ops did in two to four (its broadcast kernels index every element through the
// shape and strides, at a fifth of the memory bandwidth). Math is in f32 for every
// storage type, as candle's and PyTorch's half-precision layer norms and softmaxes do.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <mma.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

// qkv: [b*len, 3*H] (the fused projection), bias: [3*H]
// -> out: [3, b, heads, len, hd], q/k/v each in the layout batched matmuls want.
template <typename T>
__device__ void qkv_split(const T* qkv, const T* bias, T* out, uint32_t b, uint32_t len,
                          uint32_t heads, uint32_t hd) {
  const uint32_t H = heads * hd;
  const uint32_t n = 3u * b * len * H;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    uint32_t t = i / hd;
    const uint32_t d = i - t * hd;
    const uint32_t l = t % len;
    t /= len;
    const uint32_t h = t % heads;
    t /= heads;
    const uint32_t bb = t % b;
    const uint32_t w = t / b;
    const uint32_t col = w * H + h * hd + d;
    out[i] = from_f<T>(to_f(qkv[(size_t)(bb * len + l) * 3u * H + col]) + to_f(bias[col]));
  }
}

// scores: [b, heads, len, len] (already scaled); keys at or past lens[batch] get
// weight 0. One warp per row.
template <typename T>
__device__ void masked_softmax(const T* x, const uint32_t* lens, T* y, uint32_t rows,
                               uint32_t len, uint32_t heads) {
  const uint32_t row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const uint32_t valid = lens[row / (heads * len)];
  const T* xr = x + (size_t)row * len;
  T* yr = y + (size_t)row * len;
  float m = -INFINITY;
  for (uint32_t c = threadIdx.x; c < valid; c += 32) m = fmaxf(m, to_f(xr[c]));
  m = warp_max(m);
  float s = 0.f;
  for (uint32_t c = threadIdx.x; c < valid; c += 32) s += expf(to_f(xr[c]) - m);
  const float inv = 1.f / warp_sum(s);
  for (uint32_t c = threadIdx.x; c < len; c += 32)
    yr[c] = from_f<T>(c < valid ? expf(to_f(xr[c]) - m) * inv : 0.f);
}

// ctx: [b, heads, len, hd] -> out: [b*len, heads*hd].
template <typename T>
__device__ void merge_heads(const T* ctx, T* out, uint32_t b, uint32_t len, uint32_t heads,
                            uint32_t hd) {
  const uint32_t n = b * len * heads * hd;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    uint32_t t = i / hd;
    const uint32_t d = i - t * hd;
    const uint32_t h = t % heads;
    const uint32_t tok = t / heads;
    const uint32_t bb = tok / len;
    const uint32_t l = tok - bb * len;
    out[i] = ctx[((size_t)(bb * heads + h) * len + l) * hd + d];
  }
}

// y = LayerNorm(x + res + p[0]) * p[1] + p[2] for one row of `cols` ≤ 1024; p: [3, cols]
// (bias, gamma, beta). One warp, the row in registers.
template <typename T>
__device__ void add_norm_row(const T* xr, const T* rr, const T* p, T* yr, uint32_t cols,
                             float eps) {
  float v[32];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < 32; ++k) {
    const uint32_t c = threadIdx.x + 32u * k;
    v[k] = 0.f;
    if (c < cols) {
      v[k] = to_f(xr[c]) + to_f(rr[c]) + to_f(p[c]);
      sum += v[k];
    }
  }
  const float mean = warp_sum(sum) / cols;
  float var = 0.f;
#pragma unroll
  for (int k = 0; k < 32; ++k) {
    const uint32_t c = threadIdx.x + 32u * k;
    if (c < cols) {
      const float d = v[k] - mean;
      var += d * d;
    }
  }
  const float rstd = rsqrtf(warp_sum(var) / cols + eps);
#pragma unroll
  for (int k = 0; k < 32; ++k) {
    const uint32_t c = threadIdx.x + 32u * k;
    if (c < cols) yr[c] = from_f<T>((v[k] - mean) * rstd * to_f(p[cols + c]) + to_f(p[2 * cols + c]));
  }
}

// y = gelu(x + bias), the erf form; bias: [cols].
template <typename T>
__device__ void bias_gelu(const T* x, const T* bias, T* y, uint32_t n, uint32_t cols) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float t = to_f(x[i]) + to_f(bias[i % cols]);
    y[i] = from_f<T>(0.5f * t * (1.f + erff(t * 0.70710678118654752f)));
  }
}

// hidden: [b, len, cols] -> out: [b, cols] f32, the mean of the first lens[b] rows,
// L2-normalised. One block per sequence; cols ≤ 4 * blockDim.x.
template <typename T>
__device__ void mean_pool_norm(const T* hidden, const uint32_t* lens, float* out, uint32_t len,
                               uint32_t cols) {
  __shared__ float partial[32];
  const uint32_t bb = blockIdx.x;
  const uint32_t valid = lens[bb];
  const T* hs = hidden + (size_t)bb * len * cols;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (uint32_t l = 0; l < valid; ++l) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t c = threadIdx.x + blockDim.x * k;
      if (c < cols) acc[k] += to_f(hs[(size_t)l * cols + c]);
    }
  }
  const float denom = fmaxf((float)valid, 1e-9f);
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    acc[k] /= denom;
    if (threadIdx.x + blockDim.x * k < cols) sq += acc[k] * acc[k];
  }
  sq = warp_sum(sq);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sq;
  __syncthreads();
  if (threadIdx.x < 32) {
    float t = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.f;
    t = warp_sum(t);
    if (threadIdx.x == 0) partial[0] = t;
  }
  __syncthreads();
  const float inv = 1.f / fmaxf(sqrtf(partial[0]), 1e-12f);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t c = threadIdx.x + blockDim.x * k;
    if (c < cols) out[(size_t)bb * cols + c] = acc[k] * inv;
  }
}


// 16 bytes (8 elements) at once; the callers keep rows 16-byte aligned.
template <typename T>
__device__ __forceinline__ uint4 load16(const T* __restrict__ p) {
  static_assert(sizeof(T) == 2, "8 elements of 2 bytes");
  return __ldg(reinterpret_cast<const uint4*>(p));
}
template <typename T>
__device__ __forceinline__ void unpack8(uint4 u, float* f) {
  const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
  for (int k = 0; k < 8; ++k) f[k] = to_f(t[k]);
}
template <typename T>
__device__ __forceinline__ uint4 pack8(const float* f) {
  uint4 u;
  T* t = reinterpret_cast<T*>(&u);
#pragma unroll
  for (int k = 0; k < 8; ++k) t[k] = from_f<T>(f[k]);
  return u;
}

// y = gelu(x + bias) as bias_gelu, 8 elements a thread (f16 and bf16); cols and n
// multiples of 8.
template <typename T>
__device__ void bias_gelu8(const T* __restrict__ x, const T* __restrict__ bias, T* y,
                           uint32_t n, uint32_t cols) {
  for (uint32_t i = 8u * (blockIdx.x * blockDim.x + threadIdx.x); i < n;
       i += 8u * gridDim.x * blockDim.x) {
    float v[8], b[8];
    unpack8<T>(load16(x + i), v);
    unpack8<T>(load16(bias + i % cols), b);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float t = v[k] + b[k];
      v[k] = 0.5f * t * (1.f + erff(t * 0.70710678118654752f));
    }
    *reinterpret_cast<uint4*>(y + i) = pack8<T>(v);
  }
}

// add_norm_row with 16-byte loads (f16 and bf16): a lane takes 8 adjacent columns at
// a time; cols a multiple of 8, at most 1,024, and every row 16-byte aligned.
template <typename T>
__device__ void add_norm8_row(const T* __restrict__ xr, const T* __restrict__ rr,
                              const T* __restrict__ p, T* __restrict__ yr, uint32_t cols,
                              float eps) {
  float v[4][8];
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t c = (threadIdx.x + 32u * k) * 8;
    if (c < cols) {
      float a[8], b[8], bias[8];
      unpack8<T>(load16(xr + c), a);
      unpack8<T>(load16(rr + c), b);
      unpack8<T>(load16(p + c), bias);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        v[k][e] = a[e] + b[e] + bias[e];
        sum += v[k][e];
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[k][e] = 0.f;
    }
  }
  const float mean = warp_sum(sum) / cols;
  float var = 0.f;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if ((threadIdx.x + 32u * k) * 8 < cols) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float d = v[k][e] - mean;
        var += d * d;
      }
    }
  }
  const float rstd = rsqrtf(warp_sum(var) / cols + eps);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t c = (threadIdx.x + 32u * k) * 8;
    if (c < cols) {
      float g[8], b[8], o[8];
      unpack8<T>(load16(p + cols + c), g);
      unpack8<T>(load16(p + 2 * cols + c), b);
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = (v[k][e] - mean) * rstd * g[e] + b[e];
      *reinterpret_cast<uint4*>(yr + c) = pack8<T>(o);
    }
  }
}

// add_norm_row, or add_norm8_row where WIDE (f16 and bf16 with cols a multiple of 8).
template <typename T, bool WIDE>
__device__ __forceinline__ void norm_row(const T* xr, const T* rr, const T* p, T* yr,
                                         uint32_t cols, float eps) {
  if constexpr (WIDE) {
    add_norm8_row<T>(xr, rr, p, yr, cols, eps);
  } else {
    add_norm_row<T>(xr, rr, p, yr, cols, eps);
  }
}

// norm_row over `rows` rows of x and res, one warp per row.
template <typename T, bool WIDE>
__device__ void add_norm(const T* __restrict__ x, const T* __restrict__ res,
                         const T* __restrict__ p, T* __restrict__ y, uint32_t rows,
                         uint32_t cols, float eps) {
  const uint32_t row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const size_t at = (size_t)row * cols;
  norm_row<T, WIDE>(x + at, res + at, p, y + at, cols, eps);
}

// The embeddings in one pass: row r of y is norm_row of word row ids[r] and
// position row first + r % len, with the token-type row as the bias. `table` holds
// the word rows, then the position rows (from row `vocab`), then p (from row
// `params`). An id past the vocabulary takes row 0 (the tokenizer never makes one).
// Replaces two gathers and an add-and-norm, which wrote and read the gathered rows.
template <typename T, bool WIDE>
__device__ void embed_norm(const uint32_t* __restrict__ ids, const T* __restrict__ table,
                           T* __restrict__ y, uint32_t rows, uint32_t len, uint32_t cols,
                           uint32_t vocab, uint32_t first, uint32_t params, float eps) {
  const uint32_t row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const uint32_t id = ids[row];
  const T* word = table + (size_t)(id < vocab ? id : 0u) * cols;
  const T* pos = table + (size_t)(vocab + first + row % len) * cols;
  norm_row<T, WIDE>(word, pos, table + (size_t)params * cols, y + (size_t)row * cols, cols, eps);
}

// mean_pool_norm with 16-byte loads (f16 and bf16): the block's threads split into
// groups of cols / 8, each group walking every g-th token, so a block has g rows in
// flight instead of one (the one-row walk was bound by load latency); the groups'
// sums meet in shared memory. blockDim 256; cols a multiple of 8, at most 1,024.
constexpr uint32_t POOL_THREADS = 256;
template <typename T>
__device__ void mean_pool_norm8(const T* __restrict__ hidden, const uint32_t* __restrict__ lens,
                                float* __restrict__ out, uint32_t len, uint32_t cols) {
  // groups * cols ≤ (256 / (cols / 8)) * cols = 2,048 floats.
  __shared__ float sums[8 * POOL_THREADS];
  __shared__ float partial[POOL_THREADS / 32];
  const uint32_t bb = blockIdx.x;
  const uint32_t valid = lens[bb];
  const uint32_t lanes = cols / 8;
  const uint32_t groups = POOL_THREADS / lanes;
  const uint32_t group = threadIdx.x / lanes;
  const uint32_t lane = threadIdx.x - group * lanes;
  const T* hs = hidden + (size_t)bb * len * cols + lane * 8;
  if (group < groups) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
    for (uint32_t l = group; l < valid; l += groups) {
      float v[8];
      unpack8<T>(load16(hs + (size_t)l * cols), v);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] += v[e];
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) sums[group * cols + lane * 8 + e] = acc[e];
  }
  __syncthreads();
  const float denom = fmaxf((float)valid, 1e-9f);
  float sq = 0.f;
  for (uint32_t c = threadIdx.x; c < cols; c += POOL_THREADS) {
    float s = 0.f;
    for (uint32_t g = 0; g < groups; ++g) s += sums[g * cols + c];
    s /= denom;
    sums[c] = s;  // only this thread reads column c of group 0 from here on
    sq += s * s;
  }
  sq = warp_sum(sq);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sq;
  __syncthreads();
  float t = 0.f;
#pragma unroll
  for (uint32_t w = 0; w < POOL_THREADS / 32; ++w) t += partial[w];
  const float inv = 1.f / fmaxf(sqrtf(t), 1e-12f);
  for (uint32_t c = threadIdx.x; c < cols; c += POOL_THREADS)
    out[(size_t)bb * cols + c] = sums[c] * inv;
}

// Self-attention of one head for 16 queries per warp, straight from the QKV
// projection (bias added here; Q's weights and bias come scaled by 1/sqrt(HD)) to
// the heads merged: out [b*len, heads*HD]. One pass in place of the head split,
// two batched GEMMs, the softmax and the head merge, and the [b, heads, len, len]
// scores never leave the multiprocessor. Tensor cores (WMMA, f32 sums) for
// S = Q Kt and O = P V; the softmax in f32 over the first lens[b] keys.
// Grid (ceil(len / (16 * warps)), heads, b); dynamic shared memory (host-sized):
// K and V [kv_cap][HD + 8] (zero past the sequence), then per warp Q [16][HD + 8],
// then per warp S [16][kv_cap + 4] f32, where P (as T) and at last O (f32)
// overwrite S. The row paddings keep rows off the same banks.
// kv_cap: len rounded up to 16, at least HD, at most 32 * MAX_KEY_SLOTS.
constexpr int MAX_KEY_SLOTS = 16;
template <typename T, int HD>
__device__ void attention(const T* __restrict__ qkv, const T* __restrict__ bias,
                          const uint32_t* __restrict__ lens, T* __restrict__ out, uint32_t len,
                          uint32_t heads, uint32_t kv_cap) {
  using namespace nvcuda;
  constexpr uint32_t LD = HD + 8;  // K, V and Q rows in shared memory
  constexpr uint32_t CH = HD / 8;  // 16-byte pieces of a row
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t bb = blockIdx.z, h = blockIdx.y;
  const uint32_t warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const uint32_t H = heads * HD, sld = kv_cap + 4;
  const uint32_t valid = min(lens[bb], len);
  const uint32_t kv = (valid + 15u) & ~15u;
  const size_t row0 = (size_t)bb * len;
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = ks + (size_t)kv_cap * LD;
  T* qs = vs + (size_t)kv_cap * LD + (size_t)warp * 16 * LD;
  float* ss = reinterpret_cast<float*>(vs + (size_t)kv_cap * LD + (size_t)warps * 16 * LD) +
              (size_t)warp * 16 * sld;
  const uint32_t q_first = blockIdx.x * warps * 16;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  if (q_first >= valid) {  // queries past the sequence (padding): zeros
    for (uint32_t i = threadIdx.x; i < warps * 16 * CH; i += blockDim.x) {
      const uint32_t q = q_first + i / CH;
      if (q < len) *reinterpret_cast<uint4*>(out + (row0 + q) * H + h * HD + (i % CH) * 8) = zero;
    }
    return;
  }
  // K and V with their bias, four 16-byte loads of each in flight per thread.
  // blockDim is a multiple of CH, so a thread's column piece (and bias) is fixed.
  {
    const uint32_t piece = (threadIdx.x % CH) * 8;
    float bk[8], bv[8];
    unpack8<T>(load16(bias + H + h * HD + piece), bk);
    unpack8<T>(load16(bias + 2 * H + h * HD + piece), bv);
    const uint32_t pieces = kv * CH;
    for (uint32_t base = threadIdx.x; base < pieces; base += 4 * blockDim.x) {
      uint4 kr[4], vr[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const uint32_t r = (base + u * blockDim.x) / CH;
        kr[u] = zero;
        vr[u] = zero;
        if (r < valid) {
          const T* src = qkv + (row0 + r) * 3 * H + h * HD + piece;
          kr[u] = load16(src + H);
          vr[u] = load16(src + 2 * H);
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const uint32_t r = (base + u * blockDim.x) / CH;
        if (r >= kv) break;
        float k[8], v[8];
        unpack8<T>(kr[u], k);
        unpack8<T>(vr[u], v);
        if (r < valid) {
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            k[e] += bk[e];
            v[e] += bv[e];
          }
        }
        *reinterpret_cast<uint4*>(ks + r * LD + piece) = pack8<T>(k);
        *reinterpret_cast<uint4*>(vs + r * LD + piece) = pack8<T>(v);
      }
    }
  }
  const uint32_t q0 = q_first + warp * 16;
  {
    const uint32_t piece = (lane % CH) * 8;
    float bq[8];
    unpack8<T>(load16(bias + h * HD + piece), bq);
    uint4 qr[16 * CH / 32];
#pragma unroll
    for (uint32_t u = 0; u < 16 * CH / 32; ++u) {
      const uint32_t r = (lane + 32 * u) / CH;
      qr[u] = q0 + r < valid ? load16(qkv + (row0 + q0 + r) * 3 * H + h * HD + piece) : zero;
    }
#pragma unroll
    for (uint32_t u = 0; u < 16 * CH / 32; ++u) {
      const uint32_t r = (lane + 32 * u) / CH;
      float q[8];
      unpack8<T>(qr[u], q);
      if (q0 + r < valid) {
#pragma unroll
        for (int e = 0; e < 8; ++e) q[e] += bq[e];
      }
      *reinterpret_cast<uint4*>(qs + r * LD + piece) = pack8<T>(q);
    }
  }
  __syncthreads();
  if (q0 >= valid) {  // this warp's queries are all padding
    for (uint32_t i = lane; i < 16 * CH; i += 32) {
      const uint32_t q = q0 + i / CH;
      if (q < len) *reinterpret_cast<uint4*>(out + (row0 + q) * H + h * HD + (i % CH) * 8) = zero;
    }
    return;
  }
  // S = Q Kt, 16 keys at a time.
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qa[HD / 16];
#pragma unroll
  for (int k = 0; k < HD / 16; ++k) wmma::load_matrix_sync(qa[k], qs + k * 16, LD);
  for (uint32_t j = 0; j < kv; j += 16) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.f);
#pragma unroll
    for (int k = 0; k < HD / 16; ++k) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kb;
      wmma::load_matrix_sync(kb, ks + (size_t)j * LD + k * 16, LD);
      wmma::mma_sync(acc, qa[k], kb, acc);
    }
    wmma::store_matrix_sync(ss + j, acc, sld, wmma::mem_row_major);
  }
  __syncwarp();
  // Softmax row by row; P (as T) overwrites the row's own scores.
  for (int r = 0; r < 16; ++r) {
    float* srow = ss + (size_t)r * sld;
    float x[MAX_KEY_SLOTS];
    float m = -INFINITY;
#pragma unroll
    for (int t = 0; t < MAX_KEY_SLOTS; ++t) {
      const uint32_t c = lane + 32u * t;
      x[t] = c < valid ? srow[c] : -INFINITY;
      m = fmaxf(m, x[t]);
    }
    m = warp_max(m);
    float sum = 0.f;
#pragma unroll
    for (int t = 0; t < MAX_KEY_SLOTS; ++t) {
      x[t] = lane + 32u * t < valid ? __expf(x[t] - m) : 0.f;
      sum += x[t];
    }
    const float inv = 1.f / warp_sum(sum);
    __syncwarp();
    T* prow = reinterpret_cast<T*>(srow);
#pragma unroll
    for (int t = 0; t < MAX_KEY_SLOTS; ++t) {
      const uint32_t c = lane + 32u * t;
      if (c < kv) prow[c] = from_f<T>(x[t] * inv);
    }
    __syncwarp();
  }
  // O = P V.
  const T* ps = reinterpret_cast<const T*>(ss);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> o[HD / 16];
#pragma unroll
  for (int d = 0; d < HD / 16; ++d) wmma::fill_fragment(o[d], 0.f);
  for (uint32_t j = 0; j < kv; j += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pa;
    wmma::load_matrix_sync(pa, ps + j, 2 * sld);
#pragma unroll
    for (int d = 0; d < HD / 16; ++d) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vb;
      wmma::load_matrix_sync(vb, vs + (size_t)j * LD + d * 16, LD);
      wmma::mma_sync(o[d], pa, vb, o[d]);
    }
  }
  __syncwarp();
#pragma unroll
  for (int d = 0; d < HD / 16; ++d)
    wmma::store_matrix_sync(ss + d * 16, o[d], HD + 4, wmma::mem_row_major);
  __syncwarp();
  for (uint32_t i = lane; i < 16 * CH; i += 32) {
    const uint32_t r = i / CH, piece = (i % CH) * 8;
    if (q0 + r < len)
      *reinterpret_cast<uint4*>(out + (row0 + q0 + r) * H + h * HD + piece) =
          pack8<T>(ss + r * (HD + 4) + piece);
  }
}

// One m16n8k16 tensor-core product, d += a b (f32 sums), and two floats packed as
// the pair of 16-bit values an operand register holds (the lower column first).
template <typename T>
struct Mma;
template <>
struct Mma<__half> {
  static __device__ __forceinline__ void run(float* d, const uint32_t* a, const uint32_t* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
};
template <>
struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float* d, const uint32_t* a, const uint32_t* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
};

// The same attention with the scores in registers (the fragment layouts of PTX's
// mma.m16n8k16: lane = 4 g + t holds rows g and g + 8, columns 2t and 2t + 1 of each
// 8-wide tile), so the softmax needs two shuffles a row and P goes from the score
// registers straight into the P V product. KEYS (64, 128 or 256) bounds the
// sequence length. Shared memory: K [KEYS][HD + 8], V transposed [HD][KEYS + 8].
template <typename T, int HD, int KEYS>
__device__ void attention_mma(const T* __restrict__ qkv, const T* __restrict__ bias,
                              const uint32_t* __restrict__ lens, T* __restrict__ out,
                              uint32_t len, uint32_t heads) {
  constexpr uint32_t KLD = HD + 8, VLD = KEYS + 8, CH = HD / 8, NT = KEYS / 8;
  extern __shared__ __align__(128) unsigned char smem[];
  T* ks = reinterpret_cast<T*>(smem);
  T* vt = ks + KEYS * KLD;
  const uint32_t bb = blockIdx.z, h = blockIdx.y;
  const uint32_t warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const uint32_t H = heads * HD;
  const uint32_t valid = min(min(lens[bb], len), (uint32_t)KEYS);
  const uint32_t kv = (valid + 15u) & ~15u;
  const size_t row0 = (size_t)bb * len;
  const uint32_t q_first = blockIdx.x * warps * 16;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  if (q_first >= valid) {  // queries past the sequence (padding): zeros
    for (uint32_t i = threadIdx.x; i < warps * 16 * CH; i += blockDim.x) {
      const uint32_t q = q_first + i / CH;
      if (q < len) *reinterpret_cast<uint4*>(out + (row0 + q) * H + h * HD + (i % CH) * 8) = zero;
    }
    return;
  }
  {
    const uint32_t piece = (threadIdx.x % CH) * 8;
    float bk[8], bv[8];
    unpack8<T>(load16(bias + H + h * HD + piece), bk);
    unpack8<T>(load16(bias + 2 * H + h * HD + piece), bv);
    const uint32_t pieces = kv * CH;
    for (uint32_t base = threadIdx.x; base < pieces; base += 4 * blockDim.x) {
      uint4 kr[4], vr[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const uint32_t r = (base + u * blockDim.x) / CH;
        kr[u] = zero;
        vr[u] = zero;
        if (r < valid) {
          const T* src = qkv + (row0 + r) * 3 * H + h * HD + piece;
          kr[u] = load16(src + H);
          vr[u] = load16(src + 2 * H);
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const uint32_t r = (base + u * blockDim.x) / CH;
        if (r >= kv) break;
        float k[8], v[8];
        unpack8<T>(kr[u], k);
        unpack8<T>(vr[u], v);
        if (r < valid) {
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            k[e] += bk[e];
            v[e] += bv[e];
          }
        }
        *reinterpret_cast<uint4*>(ks + r * KLD + piece) = pack8<T>(k);
#pragma unroll
        for (int e = 0; e < 8; ++e) vt[(piece + e) * VLD + r] = from_f<T>(v[e]);
      }
    }
  }
  __syncthreads();
  const uint32_t q0 = q_first + warp * 16;
  if (q0 >= valid) {  // this warp's queries are all padding
    for (uint32_t i = lane; i < 16 * CH; i += 32) {
      const uint32_t q = q0 + i / CH;
      if (q < len) *reinterpret_cast<uint4*>(out + (row0 + q) * H + h * HD + (i % CH) * 8) = zero;
    }
    return;
  }
  const uint32_t g = lane >> 2, t = lane & 3;
  // Q as A operands, straight from the projection, with its bias.
  uint32_t qa[HD / 16][4];
  {
    const bool in0 = q0 + g < valid, in1 = q0 + g + 8 < valid;
    const T* r0 = qkv + (row0 + q0 + g) * 3 * H + h * HD;
    const T* r1 = qkv + (row0 + q0 + g + 8) * 3 * H + h * HD;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        const uint32_t c = kk * 16 + 8 * p + 2 * t;
        const float b0 = to_f(bias[h * HD + c]), b1 = to_f(bias[h * HD + c + 1]);
        qa[kk][2 * p] = Mma<T>::pack(in0 ? to_f(r0[c]) + b0 : 0.f, in0 ? to_f(r0[c + 1]) + b1 : 0.f);
        qa[kk][2 * p + 1] =
            Mma<T>::pack(in1 ? to_f(r1[c]) + b0 : 0.f, in1 ? to_f(r1[c + 1]) + b1 : 0.f);
      }
    }
  }
  // S = Q Kt, 8 keys a tile; keys past the sequence masked.
  float s[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    if (8u * nt < kv) {
      const T* krow = ks + (8 * nt + g) * KLD;
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        const uint32_t b[2] = {*reinterpret_cast<const uint32_t*>(krow + kk * 16 + 2 * t),
                               *reinterpret_cast<const uint32_t*>(krow + kk * 16 + 8 + 2 * t)};
        Mma<T>::run(s[nt], qa[kk], b);
      }
    }
  }
  float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (8u * nt + 2 * t + e >= valid) s[nt][e] = s[nt][2 + e] = -INFINITY;
      m0 = fmaxf(m0, s[nt][e]);
      m1 = fmaxf(m1, s[nt][2 + e]);
    }
  }
#pragma unroll
  for (int o = 1; o < 4; o <<= 1) {
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffff, m0, o));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffff, m1, o));
  }
  float l0 = 0.f, l1 = 0.f;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      s[nt][e] = __expf(s[nt][e] - m0);
      s[nt][2 + e] = __expf(s[nt][2 + e] - m1);
      l0 += s[nt][e];
      l1 += s[nt][2 + e];
    }
  }
#pragma unroll
  for (int o = 1; o < 4; o <<= 1) {
    l0 += __shfl_xor_sync(0xffffffff, l0, o);
    l1 += __shfl_xor_sync(0xffffffff, l1, o);
  }
  // O = P V (P unnormalised, in [0, 1]; the sums divide at the end).
  float o[HD / 8][4];
#pragma unroll
  for (int dt = 0; dt < HD / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
#pragma unroll
  for (int kt = 0; kt < NT / 2; ++kt) {
    if (16u * kt < kv) {
      const uint32_t pa[4] = {Mma<T>::pack(s[2 * kt][0], s[2 * kt][1]),
                              Mma<T>::pack(s[2 * kt][2], s[2 * kt][3]),
                              Mma<T>::pack(s[2 * kt + 1][0], s[2 * kt + 1][1]),
                              Mma<T>::pack(s[2 * kt + 1][2], s[2 * kt + 1][3])};
#pragma unroll
      for (int dt = 0; dt < HD / 8; ++dt) {
        const T* vrow = vt + (dt * 8 + g) * VLD + 16 * kt;
        const uint32_t b[2] = {*reinterpret_cast<const uint32_t*>(vrow + 2 * t),
                               *reinterpret_cast<const uint32_t*>(vrow + 8 + 2 * t)};
        Mma<T>::run(o[dt], pa, b);
      }
    }
  }
  const float i0 = 1.f / l0, i1 = 1.f / l1;
#pragma unroll
  for (int dt = 0; dt < HD / 8; ++dt) {
    const uint32_t col = h * HD + dt * 8 + 2 * t;
    if (q0 + g < len)
      *reinterpret_cast<uint32_t*>(out + (row0 + q0 + g) * H + col) =
          Mma<T>::pack(o[dt][0] * i0, o[dt][1] * i0);
    if (q0 + g + 8 < len)
      *reinterpret_cast<uint32_t*>(out + (row0 + q0 + g + 8) * H + col) =
          Mma<T>::pack(o[dt][2] * i1, o[dt][3] * i1);
  }
}

#define INSTANTIATE(T, S)                                                                      \
  extern "C" __global__ void qkv_split_##S(const T* qkv, const T* bias, T* out, uint32_t b,     \
                                           uint32_t len, uint32_t heads, uint32_t hd) {         \
    qkv_split<T>(qkv, bias, out, b, len, heads, hd);                                           \
  }                                                                                            \
  extern "C" __global__ void masked_softmax_##S(const T* x, const uint32_t* lens, T* y,         \
                                                uint32_t rows, uint32_t len, uint32_t heads) {  \
    masked_softmax<T>(x, lens, y, rows, len, heads);                                           \
  }                                                                                            \
  extern "C" __global__ void merge_heads_##S(const T* ctx, T* out, uint32_t b, uint32_t len,    \
                                             uint32_t heads, uint32_t hd) {                     \
    merge_heads<T>(ctx, out, b, len, heads, hd);                                               \
  }                                                                                            \
  extern "C" __global__ void add_norm_##S(const T* x, const T* res, const T* p, T* y,           \
                                          uint32_t rows, uint32_t cols, float eps) {            \
    add_norm<T, false>(x, res, p, y, rows, cols, eps);                                         \
  }                                                                                            \
  extern "C" __global__ void bias_gelu_##S(const T* x, const T* bias, T* y, uint32_t n,         \
                                           uint32_t cols) {                                     \
    bias_gelu<T>(x, bias, y, n, cols);                                                         \
  }                                                                                            \
  extern "C" __global__ void mean_pool_norm_##S(const T* hidden, const uint32_t* lens,          \
                                                float* out, uint32_t len, uint32_t cols) {      \
    mean_pool_norm<T>(hidden, lens, out, len, cols);                                           \
  }                                                                                            \
  extern "C" __global__ void embed_norm_##S(const uint32_t* ids, const T* table, T* y,          \
                                            uint32_t rows, uint32_t len, uint32_t cols,         \
                                            uint32_t vocab, uint32_t first, uint32_t params,    \
                                            float eps) {                                        \
    embed_norm<T, false>(ids, table, y, rows, len, cols, vocab, first, params, eps);           \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)

#define INSTANTIATE_HALF(T, S)                                                                 \
  extern "C" __global__ void bias_gelu8_##S(const T* x, const T* bias, T* y, uint32_t n,        \
                                            uint32_t cols) {                                    \
    bias_gelu8<T>(x, bias, y, n, cols);                                                        \
  }                                                                                            \
  extern "C" __global__ void add_norm8_##S(const T* x, const T* res, const T* p, T* y,          \
                                           uint32_t rows, uint32_t cols, float eps) {           \
    add_norm<T, true>(x, res, p, y, rows, cols, eps);                                          \
  }                                                                                            \
  extern "C" __global__ void embed_norm8_##S(const uint32_t* ids, const T* table, T* y,         \
                                             uint32_t rows, uint32_t len, uint32_t cols,        \
                                             uint32_t vocab, uint32_t first, uint32_t params,   \
                                             float eps) {                                       \
    embed_norm<T, true>(ids, table, y, rows, len, cols, vocab, first, params, eps);            \
  }                                                                                            \
  extern "C" __global__ void mean_pool_norm8_##S(const T* hidden, const uint32_t* lens,         \
                                                 float* out, uint32_t len, uint32_t cols) {     \
    mean_pool_norm8<T>(hidden, lens, out, len, cols);                                          \
  }
INSTANTIATE_HALF(__half, f16)
INSTANTIATE_HALF(__nv_bfloat16, bf16)

// WMMA on half and bfloat16 needs compute capability 8.0; build.rs tells the Rust
// side (cfg `fused_attention`) whether these exist.
// Heads of 32 only (all-MiniLM, bge-small): the kernels are written for 64 too, but
// no 64-wide instance has run on a GPU yet, so none is built.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define INSTANTIATE_ATTENTION(T, S, HD)                                                         \
  extern "C" __global__ void attention_##S##_##HD(const T* qkv, const T* bias,                  \
                                                  const uint32_t* lens, T* out, uint32_t len,   \
                                                  uint32_t heads, uint32_t kv_cap) {            \
    attention<T, HD>(qkv, bias, lens, out, len, heads, kv_cap);                                 \
  }
#define INSTANTIATE_MMA(T, S, HD, KEYS)                                                         \
  extern "C" __global__ void attention_mma_##S##_##HD##_##KEYS(                                  \
      const T* qkv, const T* bias, const uint32_t* lens, T* out, uint32_t len, uint32_t heads) { \
    attention_mma<T, HD, KEYS>(qkv, bias, lens, out, len, heads);                                \
  }
#define INSTANTIATE_MMA_ALL(T, S)                                                               \
  INSTANTIATE_MMA(T, S, 32, 64)                                                                 \
  INSTANTIATE_MMA(T, S, 32, 128)                                                                \
  INSTANTIATE_MMA(T, S, 32, 256)
INSTANTIATE_MMA_ALL(__half, f16)
INSTANTIATE_MMA_ALL(__nv_bfloat16, bf16)
INSTANTIATE_ATTENTION(__half, f16, 32)
INSTANTIATE_ATTENTION(__nv_bfloat16, bf16, 32)
#endif
