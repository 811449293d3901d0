// The block-DCT watermark's per-8x8-block work on a luma plane (the worker's watermark::dct;
// shaders/src/dct.wgsl does the same): `basis[k*8 + n]` is the orthonormal DCT-II basis k at
// sample n (from the CPU, f32). Slot s = block*12 + k carries band coefficient BAND[k].
//   dct_correlate: one thread per slot, out[s] = coeffs[s] * X_block(BAND[k]) (rows against
//                  the horizontal basis, then against the vertical one, as the reference sums)
//   dct_embed:     one thread per pixel, out = plane + sum_k coeffs[s_k] * b[v_k][y] * b[u_k][x]
//                  inside whole blocks, the plane as it is elsewhere.

#define BAND_LEN 12
__constant__ int BAND_U[BAND_LEN] = {2, 1, 0, 3, 2, 1, 0, 4, 3, 2, 1, 0};
__constant__ int BAND_V[BAND_LEN] = {0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4};

extern "C" __global__ void dct_correlate(const float *__restrict__ plane, const float *__restrict__ coeffs,
                                         const float *__restrict__ basis, float *__restrict__ out,
                                         int width, int blocks_x, int blocks_y) {
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= blocks_x * blocks_y * BAND_LEN) return;
    const int block = s / BAND_LEN, k = s % BAND_LEN;
    const int u = BAND_U[k], v = BAND_V[k];
    const int x0 = (block % blocks_x) * 8, y0 = (block / blocks_x) * 8;
    float acc = 0.f;
    for (int y = 0; y < 8; ++y) {
        const float *row = plane + (long long)(y0 + y) * width + x0;
        float r = 0.f;
        for (int x = 0; x < 8; ++x) r += row[x] * basis[u * 8 + x];
        acc += r * basis[v * 8 + y];
    }
    out[s] = coeffs[s] * acc;
}

extern "C" __global__ void dct_embed(const float *__restrict__ plane, const float *__restrict__ coeffs,
                                     const float *__restrict__ basis, float *__restrict__ out, int width,
                                     int height, int blocks_x, int blocks_y) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)width * height) return;
    const int px = (int)(i % width), py = (int)(i / width);
    const int bx = px / 8, by = py / 8;
    if (bx >= blocks_x || by >= blocks_y) {
        out[i] = plane[i];
        return;
    }
    const int x = px % 8, y = py % 8;
    const float *a = coeffs + ((long long)by * blocks_x + bx) * BAND_LEN;
    float d = 0.f;
#pragma unroll
    for (int k = 0; k < BAND_LEN; ++k) {
        if (a[k] == 0.f) continue;
        d += a[k] * basis[BAND_V[k] * 8 + y] * basis[BAND_U[k] * 8 + x];
    }
    out[i] = plane[i] + d;
}
