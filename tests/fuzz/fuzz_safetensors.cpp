// Fuzz target: SafetensorsFile::from_bytes on arbitrary bytes.
//
// Input: a whole safetensors file. Accepted files are read back tensor by tensor (raw and
// typed), and must survive a round trip through SafetensorsWriter with the same tensors
// (name, dtype, shape, bytes) and metadata.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "qkscope/error.h"
#include "qkscope/safetensors.h"

namespace {

using qkscope::Dtype;
using qkscope::SafetensorsFile;

// The typed read of `name` when its dtype has a C++ type; each element is bytes of the tensor.
void read_typed(const SafetensorsFile& file, const qkscope::TensorInfo& t) {
  const auto check = [&](std::size_t n_values, std::size_t elem) {
    FUZZ_EXPECT(n_values == static_cast<std::size_t>(t.numel()));
    FUZZ_EXPECT(n_values * elem == t.n_bytes());
  };
  switch (t.dtype) {
    case Dtype::F32: check(file.read<float>(t.name, t.shape).size(), 4); break;
    case Dtype::F64: check(file.read<double>(t.name).size(), 8); break;
    case Dtype::I64: check(file.read<int64_t>(t.name).size(), 8); break;
    case Dtype::I32: check(file.read<int32_t>(t.name).size(), 4); break;
    case Dtype::U8: check(file.read<uint8_t>(t.name).size(), 1); break;
    default: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  std::optional<SafetensorsFile> file;
  try {
    file.emplace(SafetensorsFile::from_bytes(bytes, "fuzz.safetensors"));
  } catch (const qkscope::Error&) {
    return 0;  // refused: the expected outcome for most inputs
  }

  // Accepted: every declared byte lies inside the input, and reads give exactly those bytes.
  qkscope::SafetensorsWriter writer;
  std::vector<std::string> contents;
  contents.reserve(file->tensors().size());
  uint64_t total = 0;
  for (const qkscope::TensorInfo& t : file->tensors()) {
    FUZZ_EXPECT(file->has(t.name));
    FUZZ_EXPECT(t.begin <= t.end);
    total += t.n_bytes();
    contents.push_back(file->read_bytes(t.name));
    FUZZ_EXPECT(contents.back().size() == t.n_bytes());
    read_typed(*file, t);
  }
  FUZZ_EXPECT(total <= size);
  for (std::size_t i = 0; i < file->tensors().size(); ++i) {
    const qkscope::TensorInfo& t = file->tensors()[i];
    writer.add(t.name, t.dtype, t.shape, contents[i].data(), contents[i].size());
  }
  for (const auto& [key, value] : file->metadata()) writer.set_metadata(key, value);

  // What the writer writes, the reader reads back unchanged.
  const SafetensorsFile again = SafetensorsFile::from_bytes(writer.bytes(), "roundtrip");
  FUZZ_EXPECT(again.tensors().size() == file->tensors().size());
  FUZZ_EXPECT(again.metadata() == file->metadata());
  for (std::size_t i = 0; i < file->tensors().size(); ++i) {
    const qkscope::TensorInfo& t = file->tensors()[i];
    const qkscope::TensorInfo& u = again.info(t.name);
    FUZZ_EXPECT(u.dtype == t.dtype && u.shape == t.shape);
    FUZZ_EXPECT(again.read_bytes(t.name) == contents[i]);
  }
  return 0;
}
