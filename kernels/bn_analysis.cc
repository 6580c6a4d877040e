#include "kernels/bn_analysis.h"

namespace normserve {

const char* BnReliabilityName(BnReliability r) {
  switch (r) {
    case BnReliability::kUndefined:
      return "undefined";
    case BnReliability::kUnreliable:
      return "unreliable";
    case BnReliability::kFine:
      return "fine";
  }
  return "unknown";
}

BnReliability ClassifyValuesPerChannel(int64_t values_per_channel, int64_t reliable_threshold) {
  // One value per channel: the sample variance has zero degrees of freedom.
  if (values_per_channel <= 1) return BnReliability::kUndefined;
  if (values_per_channel < reliable_threshold) return BnReliability::kUnreliable;
  return BnReliability::kFine;
}

}  // namespace normserve
