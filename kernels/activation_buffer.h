// Memory for activations: 64-byte aligned (what oneDNN's kernels want), optionally backed
// by transparent huge pages from 2 MiB up where the kernel offers them on request
// (/sys/kernel/mm/transparent_hugepage/enabled = madvise, Debian's default).
//
// Huge pages are for large buffers filled once: touching a fresh 4 KiB page costs a
// fault, and on the virtual machine this was measured on, faulting in a ResNet-18 stem
// activation of 16 samples (51 MB) took ~145 ms, longer than computing it. They are not
// for a serving arena reused by every request: there they left the median alone but
// raised ResNet-50's mean batch-1 latency from 23.1 to 26.8 ms (slow outliers; three
// alternating 8 s runs each, 2 pinned threads).
#ifndef NORMSERVE_KERNELS_ACTIVATION_BUFFER_H_
#define NORMSERVE_KERNELS_ACTIVATION_BUFFER_H_

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace normserve {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using ActivationBuffer = std::unique_ptr<void, FreeDeleter>;

// At least `bytes` (at least 64); null when out of memory. Contents uninitialized.
ActivationBuffer AllocateActivations(size_t bytes, bool huge_pages = false);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_ACTIVATION_BUFFER_H_
