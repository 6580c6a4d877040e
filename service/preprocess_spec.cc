#include "service/preprocess_spec.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace normserve {

absl::Status ValidatePreprocess(const v1::Preprocess& p, int64_t channels) {
  if (p.resize_shorter_side() < 0 || p.resize_shorter_side() > 65536) {
    return absl::InvalidArgumentError(absl::StrCat("preprocess.resize_shorter_side is ",
                                                   p.resize_shorter_side(), ", expected 0..65536"));
  }
  if (!(p.center_crop_size() == 0 || p.center_crop_size() == 2) ||
      std::any_of(p.center_crop().begin(), p.center_crop().end(),
                  [](int64_t s) { return s <= 0 || s > 65536; })) {
    return absl::InvalidArgumentError(
        absl::StrCat("preprocess.center_crop is [", absl::StrJoin(p.center_crop(), ","),
                     "], expected [] or [height, width] in 1..65536"));
  }
  if (!p.channel_order().empty() && p.channel_order() != "RGB" && p.channel_order() != "BGR") {
    return absl::InvalidArgumentError(absl::StrCat("preprocess.channel_order is \"",
                                                   p.channel_order().substr(0, 16),
                                                   "\", expected RGB or BGR"));
  }
  for (const auto* list : {&p.mean(), &p.std()}) {
    if (channels > 0 && !(list->empty() || list->size() == 1 || list->size() == channels)) {
      return absl::InvalidArgumentError(
          absl::StrCat("preprocess.", list == &p.mean() ? "mean" : "std", " has ", list->size(),
                       " values, the model input has ", channels, " channel(s)"));
    }
  }
  for (float s : p.std()) {
    if (!(s > 0) || !std::isfinite(s)) {
      return absl::InvalidArgumentError(absl::StrCat("preprocess.std has ", s, ", expected > 0"));
    }
  }
  return absl::OkStatus();
}

}  // namespace normserve
