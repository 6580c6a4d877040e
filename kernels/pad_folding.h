// Folding of a zero constant Pad into the padding of the Conv or AveragePool it feeds
// (PyTorch exports avg_pool2d(count_include_pad=True) as Pad + AveragePool, and explicit
// F.pad before a conv): one primitive with padding instead of a copy plus a primitive.
#ifndef NORMSERVE_KERNELS_PAD_FOLDING_H_
#define NORMSERVE_KERNELS_PAD_FOLDING_H_

#include "kernels/specialize.h"

namespace normserve {

// Rewrites g: every Pad of a 4-D runtime tensor in constant mode with value 0, padding
// only H and W by non-negative amounts, whose output feeds only input 0 of one Conv or
// AveragePool (auto_pad NOTSET, and for the pool ceil_mode 0 and either
// count_include_pad 1 or no pads of its own; the fold sets count_include_pad 1, since the
// zeros the Pad wrote were counted) and is not a graph output, is removed and its pads
// added to that node's. Returns the number of Pads folded.
int FoldZeroPads(SpecializedGraph* g);

}  // namespace normserve

#endif  // NORMSERVE_KERNELS_PAD_FOLDING_H_
