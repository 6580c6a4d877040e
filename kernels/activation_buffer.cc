#include "kernels/activation_buffer.h"

#include <sys/mman.h>

#include <algorithm>

namespace normserve {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kCacheLine = 64;
}  // namespace

ActivationBuffer AllocateActivations(size_t bytes, bool huge_pages) {
  bytes = std::max(bytes, kCacheLine);
  if (!huge_pages || bytes < kHugePage) {
    return ActivationBuffer(
        std::aligned_alloc(kCacheLine, (bytes + kCacheLine - 1) / kCacheLine * kCacheLine));
  }
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  // Advice only: without THP (or with it off) the buffer works on small pages.
  if (p != nullptr) madvise(p, rounded, MADV_HUGEPAGE);
  return ActivationBuffer(p);
}

}  // namespace normserve
