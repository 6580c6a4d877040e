// Plain-text tables for the CLI's reports.
#include "tools/text_table.h"

#include <algorithm>

#include "absl/strings/numbers.h"

namespace normserve::cli {

std::string TextTable::Render() const {
  std::vector<size_t> width;
  for (const auto& row : rows_) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (size_t r = 0; r < rows_.size(); ++r) {
    std::string line;
    for (size_t c = 0; c < rows_[r].size(); ++c) {
      const std::string& cell = rows_[r][c];
      double unused = 0;
      const bool number = r > 0 && absl::SimpleAtod(cell, &unused);
      const std::string pad(width[c] - cell.size(), ' ');
      if (c > 0) line += "  ";
      line += number ? pad + cell : cell + pad;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
    if (r == 0) {
      size_t total = 0;
      for (size_t w : width) total += w;
      out += std::string(total + 2 * (width.empty() ? 0 : width.size() - 1), '-') + "\n";
    }
  }
  return out;
}

}  // namespace normserve::cli
