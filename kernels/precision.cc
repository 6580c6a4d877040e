// Precision names and the CPU ISA check (see precision.h).
#include "kernels/precision.h"

#include "absl/strings/str_cat.h"

namespace normserve {

absl::string_view PrecisionName(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kInt8:
      return "int8";
  }
  return "fp32";
}

absl::StatusOr<Precision> ParsePrecision(absl::string_view name, absl::string_view field) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8}) {
    if (name == PrecisionName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, " \"", name.substr(0, 32), "\" is not a precision (fp32, bf16, int8)"));
}

std::string CpuIsaName(dnnl::cpu_isa isa) {
  using I = dnnl::cpu_isa;
  switch (isa) {
    case I::all:
      return "all";
    case I::sse41:
      return "sse41";
    case I::avx:
      return "avx";
    case I::avx2:
      return "avx2";
    case I::avx2_vnni:
      return "avx2_vnni";
    case I::avx512_mic:
      return "avx512_mic";
    case I::avx512_mic_4ops:
      return "avx512_mic_4ops";
    case I::avx512_core:
      return "avx512_core";
    case I::avx512_core_vnni:
      return "avx512_core_vnni";
    case I::avx512_core_bf16:
      return "avx512_core_bf16";
    case I::avx512_core_amx:
      return "avx512_core_amx";
  }
  return absl::StrCat("isa 0x", absl::Hex(static_cast<int>(isa)));
}

absl::Status CheckPrecisionSupported(Precision p, dnnl::cpu_isa isa) {
  switch (p) {
    case Precision::kFp32:
      return absl::OkStatus();
    case Precision::kInt8: {
      // u8 x s8 dot products with VNNI (or AMX, which includes it); without it oneDNN
      // falls back to slower avx512_core int8 kernels.
      const unsigned need = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_vnni);
      if ((static_cast<unsigned>(isa) & need) == need) return absl::OkStatus();
      return absl::FailedPreconditionError(absl::StrCat(
          "precision int8 needs the CPU ISA avx512_core_vnni (AVX512-VNNI) or better; this CPU "
          "offers ",
          CpuIsaName(isa), " (oneDNN's effective ISA): serve this model in fp32"));
    }
    case Precision::kBf16: {
      // oneDNN's ISA values are bit sets, each including the ones it extends
      // (avx512_core_amx includes avx512_core_bf16; avx2_vnni does not).
      const unsigned need = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
      if ((static_cast<unsigned>(isa) & need) == need) return absl::OkStatus();
      return absl::FailedPreconditionError(absl::StrCat(
          "precision bf16 needs the CPU ISA avx512_core_bf16 (AVX512-BF16) or better; this CPU "
          "offers ",
          CpuIsaName(isa), " (oneDNN's effective ISA): serve this model in fp32"));
    }
  }
  return absl::InvalidArgumentError("unknown precision");
}

}  // namespace normserve
