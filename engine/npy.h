// .npy files (numpy.lib.format): "\x93NUMPY", a version byte 1, 2 or 3 and a 0, the header
// length little-endian (2 bytes in version 1, 4 in versions 2 and 3), then the header: a Python
// dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with spaces to
// a multiple of 64 bytes and ended by a newline (version 3: UTF-8), then the array's bytes.
// kd reads descr <f2 <f4 <f8 |u1 <i4 <i8; every other dtype, big-endian ones included, and
// structured dtypes are refused naming `where` (the file and the member).
#pragma once
#include <string>

#include "engine/tensor.h"

namespace kd {

struct NpyHeader {
  std::string descr;  // NumPy's dtype string, e.g. "<f4"
  DType dtype = DType::f32;
  Shape shape;  // () -> {} (one element)
  bool fortran_order = false;
  uint64_t bytes = 0;       // of the header: the array data starts here
  uint64_t data_bytes = 0;  // of the array: elements x element size
};

// The header's size from the first bytes of a .npy file (12, or all of a shorter file).
uint64_t npy_header_size(const uint8_t* p, uint64_t n, const std::string& where);
// Parses the header from the first n >= npy_header_size bytes of a .npy file.
NpyHeader parse_npy_header(const uint8_t* p, uint64_t n, const std::string& where);
// NumPy dtype strings kd reads ("<f4", "|u1", ...) -> DType.
DType parse_npy_descr(const std::string& descr, const std::string& where);

}  // namespace kd
