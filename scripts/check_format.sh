#!/usr/bin/env bash
# clang-format check of the C++ sources against .clang-format (CI runs it; it never writes).
#   scripts/check_format.sh                 check every tracked .cc/.h not in format_pending.txt
#   scripts/check_format.sh FILE...         check these files
#   scripts/check_format.sh --fix [FILE...] reformat in place (the files, or every tracked one)
# scripts/format_pending.txt lists the files not yet formatted: the one-time reformat of the
# tree (after the open branches merge) is `--fix $(cat scripts/format_pending.txt)` and then
# emptying that list. Until then a new file, or one already formatted, must stay formatted.
set -euo pipefail
cd "$(dirname "$0")/.."
fmt=$(command -v clang-format-14 || command -v clang-format)
fix=0
[[ ${1:-} == --fix ]] && { fix=1; shift; }
if (($#)); then
  files=("$@")
else
  mapfile -t files < <(git ls-files '*.cc' '*.h' | grep -vxF -f <(grep -v '^#' scripts/format_pending.txt))
fi
((${#files[@]})) || exit 0
if ((fix)); then
  exec "$fmt" -i "${files[@]}"
fi
if ! "$fmt" --dry-run -Werror "${files[@]}" 2>/tmp/normserve_format.$$; then
  grep -E '^[^ ].*: error:' /tmp/normserve_format.$$ | cut -d: -f1 | sort -u |
    sed 's/^/needs clang-format: /'
  echo "fix with: scripts/check_format.sh --fix <file>" >&2
  rm -f /tmp/normserve_format.$$
  exit 1
fi
rm -f /tmp/normserve_format.$$
echo "clang-format: ${#files[@]} files clean"
