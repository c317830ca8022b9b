// The CPU path's fast convolutions (fp32): oneDNN's JIT kernels (cpu_backend.h), tested against
// kd's im2col reference (conv.h) on random inputs. Same tensors and contract as conv.h: NHWC
// activations, [c_out, kh, kw, c_in / groups] weights, dx written, dw accumulated (+=).
//
// Which shapes: every convolution with a spatial kernel (3x3, the 7x7 stem, strided, grouped,
// depthwise). Pointwise (1x1, one group) convolutions stay kd's GEMM on the NHWC tensor itself:
// oneDNN 2.6 computes fp32 convolutions only in its blocked layouts (nChw16c), so every call
// reorders NHWC in and out; for a 3x3 that copy is cheap next to the 9x larger product (measured
// 2-3x faster than im2col + GEMM), for a 1x1 it eats the gain (docs/perf-notes.md).
//
// Memory: primitives are built once per (shape, op) and cached; the blocked copies live in
// per-thread scratch buffers that grow to the largest shape and are reused.
#pragma once
#include "kernels/conv.h"

namespace kd {

// True when the fast path takes this shape under the current backend (cpu_backend() == onednn,
// a spatial kernel, and oneDNN has a JIT kernel for it: shapes it would only run in its slow
// reference implementation stay on kd's).
bool conv2d_onednn_takes(const Conv2dShape& s);

// Each returns false (and does nothing) when conv2d_onednn_takes(s) is false.
bool conv2d_forward_onednn(const Conv2dShape& s, const float* x, const float* w, float* y);
bool conv2d_backward_data_onednn(const Conv2dShape& s, const float* dy, const float* w, float* dx);
bool conv2d_backward_filter_onednn(const Conv2dShape& s, const float* x, const float* dy, float* dw);

// The implementation oneDNN chose per op for this shape ("jit:avx512_core", ...), or why the fast
// path does not take it: bench and test output.
std::string conv2d_onednn_describe(const Conv2dShape& s);

}  // namespace kd
