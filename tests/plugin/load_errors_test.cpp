// Loading errors: one line, LibTorch's reason, and what to do when the file comes from a newer
// PyTorch. The files are rewrites of a generated model (bert.pt) made here with LibTorch's own
// archive reader and writer:
//   - future_format.pt: the archive's `version` record raised above what this LibTorch reads
//     (a file from a PyTorch whose format this LibTorch does not know);
//   - sdpa_like.pt: as a PyTorch 2.x SDPA export looks to LibTorch 1.x: a `byteorder` record
//     (PyTorch 2.x writes one, 1.x does not) and a call of aten::scaled_dot_product_attention in
//     the code (unknown to LibTorch 1.x: its message starts with a newline).
// The real thing (an SDPA model exported by torch 2.6, refused by the 1.13 build) is checked by
// tools/run-tests-torch2.sh.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/versions.h>
#include <torch/script.h>
#include <torch/version.h>

#include "plugin_test_util.h"
#include "qkscope/capture_module.h"
#include "qkscope/error.h"

namespace qkscope::test {
namespace {

namespace fs = std::filesystem;

// Copies `from` into `to` record by record; `edit` may change a record's bytes or drop it.
template <typename Edit>
void rewrite_archive(const std::string& from, const std::string& to, uint64_t min_version,
                     const std::vector<std::pair<std::string, std::string>>& extra, Edit edit) {
  caffe2::serialize::PyTorchStreamReader reader(from);
  caffe2::serialize::PyTorchStreamWriter writer(to);
  for (const std::string& name : reader.getAllRecords()) {
    // The writer writes these itself.
    if (name == "version" || name == ".data/version" || name == ".data/serialization_id" ||
        name == "byteorder")
      continue;
    auto [data, size] = reader.getRecord(name);
    std::string bytes(static_cast<const char*>(data.get()), size);
    if (!edit(name, bytes)) continue;
    writer.writeRecord(name, bytes.data(), bytes.size());
  }
  for (const auto& [name, bytes] : extra) writer.writeRecord(name, bytes.data(), bytes.size());
  writer.setMinVersion(min_version);
  writer.writeEndOfFile();
}

std::string load_error(const std::string& path) {
  try {
    CaptureModule::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

class LoadErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qkscope_load_errors_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(LoadErrors, FileFormatNewerThanThisLibTorchIsNamedWithTheFix) {
  const std::string path = (dir_ / "future_format.pt").string();
  rewrite_archive(model_path("bert.pt"), path,
                  caffe2::serialize::kMaxSupportedFileFormatVersion + 1, {},
                  [](const std::string&, std::string&) { return true; });
  const std::string message = load_error(path);
  SCOPED_TRACE(message);
  EXPECT_EQ(message.find('\n'), std::string::npos);
  EXPECT_NE(message.find("failed to load model '" + path + "': "), std::string::npos);
  // LibTorch's own reason, then ours.
  EXPECT_NE(message.find(std::to_string(caffe2::serialize::kMaxSupportedFileFormatVersion + 1)),
            std::string::npos);
  EXPECT_NE(message.find("written by a newer PyTorch than the LibTorch " TORCH_VERSION),
            std::string::npos);
  EXPECT_NE(message.find("README, 'LibTorch 2.x'"), std::string::npos);
}

TEST_F(LoadErrors, UnknownOperatorOfAPyTorch2ExportGivesTheReasonInOneLine) {
  const std::string path = (dir_ / "sdpa_like.pt").string();
  bool replaced = false;
  rewrite_archive(model_path("bert.pt"), path, 0, {{"byteorder", "little"}},
                  [&](const std::string& name, std::string& bytes) {
                    // Debug records map the code's byte ranges: they would no longer match.
                    if (name.size() > 10 && name.rfind(".debug_pkl") == name.size() - 10)
                      return false;
                    const std::string call = "torch.matmul(";
                    size_t at = bytes.find(call);
                    if (!replaced && name.rfind("code/", 0) == 0 && at != std::string::npos) {
                      bytes.replace(at, call.size(), "torch.scaled_dot_product_attention(");
                      replaced = true;
                    }
                    return true;
                  });
  ASSERT_TRUE(replaced) << "no torch.matmul( in bert.pt's code";
  const std::string message = load_error(path);
  SCOPED_TRACE(message);
  ASSERT_FALSE(message.empty()) << "the rewritten file loaded";
  EXPECT_EQ(message.find('\n'), std::string::npos);
  const std::string prefix = "failed to load model '" + path + "': ";
  ASSERT_EQ(message.rfind(prefix, 0), 0u);
  // The reason, not an empty string after the colon.
  EXPECT_GT(message.size(), prefix.size() + 10);
  EXPECT_NE(message[prefix.size()], ' ');
  if (TORCH_VERSION_MAJOR < 2) {
    EXPECT_NE(message.find("Unknown builtin op: aten::scaled_dot_product_attention"),
              std::string::npos);
    EXPECT_NE(message.find("written by PyTorch 2.x (it has a 'byteorder' record)"),
              std::string::npos);
    EXPECT_NE(message.find("README, 'LibTorch 2.x'"), std::string::npos);
  } else {
    // LibTorch 2.x knows the operator (the call has the wrong arguments here): no hint.
    EXPECT_EQ(message.find("newer PyTorch"), std::string::npos);
  }
}

TEST_F(LoadErrors, BrokenFilesStillGiveOneLine) {
  for (const char* file : {"corrupt.pt", "not_torchscript.pt"}) {
    const std::string message = load_error(model_path(file));
    SCOPED_TRACE(message);
    EXPECT_EQ(message.find('\n'), std::string::npos);
    EXPECT_NE(message.find(std::string(file) + "': "), std::string::npos);
    EXPECT_EQ(message.find("newer PyTorch"), std::string::npos);
  }
}

}  // namespace
}  // namespace qkscope::test
