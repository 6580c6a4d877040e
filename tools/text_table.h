// A plain-text table for people: columns padded to their widest cell, numbers right-aligned.
#ifndef NORMSERVE_TOOLS_TEXT_TABLE_H_
#define NORMSERVE_TOOLS_TEXT_TABLE_H_

#include <string>
#include <vector>

namespace normserve::cli {

class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) : rows_{std::move(header)} {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Header, a rule, the rows; a cell that parses as a number is right-aligned.
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace normserve::cli

#endif  // NORMSERVE_TOOLS_TEXT_TABLE_H_
