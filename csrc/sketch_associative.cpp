// Network Sketching's associative implementation on CPU (docs/sketch.md "Associative implementation, timed").
//
// Built with csrc/binary_popcount.cpp into one library (methods.common.popcount_build), called through ctypes by
// methods/sketch.py. One kernel runs both ways of computing the binary convolutions conv(X, B_k) of a layer, so
// their measured times differ only by the additions each does:
//   - direct: every tensor a root, sum_i B_k[i] u[i] over its n entries;
//   - associative: in the order of a spanning tree, conv(X, B_k) = conv(X, B_parent) + sum over the d entries where
//     B_k differs from its parent of 2 B_k[i] u[i] (B_k - B_parent is +-2 there and 0 elsewhere).
// A plan is a list of steps in build order: step s writes tensor node[s] from parent[s] (-1: start from 0) plus
// sum_{j in [offset[s], offset[s+1])} coef[j] * u[index[j]]. u is one output position's receptive field (im2col
// row, n floats); the caller checks shapes.
#include <cstdint>

extern "C" {

// U: float [P][n] (im2col rows, one per output position); out: float [P][T], T tensors per position.
void sk_accumulate(const float* U, int64_t P, int64_t n, int64_t steps, const int64_t* node, const int64_t* parent,
                   const int64_t* offset, const int32_t* index, const float* coef, int64_t T, float* out,
                   int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t p = 0; p < P; ++p) {
        const float* u = U + p * n;
        float* o = out + p * T;
        for (int64_t s = 0; s < steps; ++s) {
            float acc = parent[s] < 0 ? 0.0f : o[parent[s]];
            for (int64_t j = offset[s]; j < offset[s + 1]; ++j) acc += coef[j] * u[index[j]];
            o[node[s]] = acc;
        }
    }
}

}  // extern "C"
