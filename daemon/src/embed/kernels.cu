// Fused CUDA kernels for the BERT encoder (see cuda_ops.rs), compiled to PTX by
// build.rs when the `cuda` feature is on. Each does in one pass what candle's generic
// ops did in two to four (its broadcast kernels index every element through the
// shape and strides, at a fifth of the memory bandwidth). Math is in f32 for every
// storage type, as candle's and PyTorch's half-precision layer norms and softmaxes do.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
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

// y = LayerNorm(x + res + p[0]) * p[1] + p[2], rows of `cols` ≤ 1024; p: [3, cols]
// (bias, gamma, beta). One warp per row, the row in registers.
template <typename T>
__device__ void add_norm(const T* x, const T* res, const T* p, T* y, uint32_t rows,
                         uint32_t cols, float eps) {
  const uint32_t row = blockIdx.x * blockDim.y + threadIdx.y;
  if (row >= rows) return;
  const T* xr = x + (size_t)row * cols;
  const T* rr = res + (size_t)row * cols;
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
  T* yr = y + (size_t)row * cols;
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
    add_norm<T>(x, res, p, y, rows, cols, eps);                                                \
  }                                                                                            \
  extern "C" __global__ void bias_gelu_##S(const T* x, const T* bias, T* y, uint32_t n,         \
                                           uint32_t cols) {                                     \
    bias_gelu<T>(x, bias, y, n, cols);                                                         \
  }                                                                                            \
  extern "C" __global__ void mean_pool_norm_##S(const T* hidden, const uint32_t* lens,          \
                                                float* out, uint32_t len, uint32_t cols) {      \
    mean_pool_norm<T>(hidden, lens, out, len, cols);                                           \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)
