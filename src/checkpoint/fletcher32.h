// HDF5's Fletcher32 checksum (the H5Z_FILTER_FLETCHER32 filter's), computed by us so that
// checkpoint chunks can be written directly (H5Dwrite_chunk) without HDF5's slower
// filter pipeline. The filter stores it as 4 little-endian bytes after the chunk's data.
#pragma once
#include <cstddef>
#include <cstdint>

namespace relora::checkpoint_detail {

// Bit-identical to HDF5's H5_checksum_fletcher32 for every input of an even number of bytes.
uint32_t fletcher32(const unsigned char* data, size_t bytes);

}  // namespace relora::checkpoint_detail
