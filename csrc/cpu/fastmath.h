// Branch-free float32 exp and erfc that GCC and Clang vectorise inside `omp simd` loops (libm's
// erfcf is scalar). exp_f32: Cody-Waite reduction and the Cephes polynomial, about 1e-7 relative
// error, 0 below -87.3 (where the true value is a float denormal). erfc_f32: the Chebyshev fit of
// Numerical Recipes (6.2), relative error below 1.2e-7 in exact arithmetic and below 1e-5 in
// float32 for every z >= 0 where erfc(z) is a normal float; the error grows with z from rounding
// z^2, which is still well inside float32 loss tolerances because such tails enter the loss
// under sqrt(p + delta).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__GNUC__)
#define BFDKERN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define BFDKERN_ALWAYS_INLINE inline
#endif

namespace bfdkern::cpu {

BFDKERN_ALWAYS_INLINE float exp_f32(float x) {
  // NaN maps to 0 here (no undefined float->int conversion) and is returned unchanged below.
  const float xc = x < -87.3f ? -87.3f : (x > 88.0f ? 88.0f : (x == x ? x : 0.0f));
  // Round to nearest through the 1.5 * 2^23 trick: vectorises without SSE4.1's roundps.
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) * 8388608;  // 2^n as float bits
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x < -87.3f ? 0.0f : (x == x ? p * scale : x);
}

// erfc(z) for z >= 0.
BFDKERN_ALWAYS_INLINE float erfc_f32(float z) {
  const float t = 1.0f / (1.0f + 0.5f * z);
  float q = 0.17087277f;
  q = q * t - 0.82215223f;
  q = q * t + 1.48851587f;
  q = q * t - 1.13520398f;
  q = q * t + 0.27886807f;
  q = q * t - 0.18628806f;
  q = q * t + 0.09678418f;
  q = q * t + 0.37409196f;
  q = q * t + 1.00002368f;
  q = q * t - 1.26551223f;
  return t * exp_f32(q - z * z);
}

}  // namespace bfdkern::cpu
