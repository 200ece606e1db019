// The q/k file (SPEC section 2): bit-exact round trips, the layout other readers see, and one
// planted file per rule read_qk_file enforces (the message must name the rule).
#include "qkscope/qk_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "qkscope/error.h"
#include "qkscope/qk_data.h"
#include "qkscope/safetensors.h"

namespace qkscope {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            fmt::format("qkscope-{}-{}-{}", test->test_suite_name(), test->name(), ::getpid());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// Values a careless copy would change: signed zero, subnormals, infinities, NaN payloads.
float tricky_value(std::size_t i) {
  static const float kTricky[] = {0.0f,
                                  -0.0f,
                                  std::numeric_limits<float>::denorm_min(),
                                  -std::numeric_limits<float>::max(),
                                  std::numeric_limits<float>::infinity(),
                                  std::numeric_limits<float>::quiet_NaN(),
                                  0.1f,
                                  -1.0f / 3.0f};
  if (i < std::size(kTricky)) return kTricky[i];
  return std::sin(static_cast<float>(i) * 0.7f) * static_cast<float>(i);
}

SiteData make_site(int layer, int n_tokens, int n_heads, int head_dim, float offset) {
  SiteData site;
  site.layer = layer;
  site.n_heads = n_heads;
  site.head_dim = head_dim;
  for (int h = 0; h < n_heads; ++h) site.head_index.push_back(h);
  const std::size_t n = static_cast<std::size_t>(n_tokens) * n_heads * head_dim;
  for (std::size_t i = 0; i < n; ++i) {
    site.q.push_back(tricky_value(i) + offset);
    site.k.push_back(-tricky_value(n - 1 - i));
  }
  return site;
}

// Two sequences (3 and 2 tokens), two sites of different H and D, one with selected heads.
QkData make_data(bool with_ids) {
  QkData data;
  data.sequence = {4, 4, 4, 9, 9};
  data.position = {0, 1, 3, 0, 1};
  if (with_ids) data.token_id = {101, 2023, 0, 101, 999999999999};
  data.tokens_seen = 17;
  data.sequences_seen = 6;
  data.sites.push_back(make_site(0, 5, 2, 3, 0.0f));
  data.sites[0].module = "encoder.layer.0.attention.self";
  data.sites[0].prescale = 1.0 / std::sqrt(3.0);  // needs all 17 digits to come back
  data.sites.push_back(make_site(3, 5, 3, 2, 0.5f));
  data.sites[1].module = "";
  data.sites[1].head_index = {5, 2, 7};
  return data;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void expect_equal(const QkData& expected, const QkData& actual) {
  EXPECT_EQ(actual.sequence, expected.sequence);
  EXPECT_EQ(actual.position, expected.position);
  EXPECT_EQ(actual.token_id, expected.token_id);
  EXPECT_EQ(actual.tokens_seen, expected.tokens_seen);
  EXPECT_EQ(actual.sequences_seen, expected.sequences_seen);
  ASSERT_EQ(actual.sites.size(), expected.sites.size());
  for (std::size_t s = 0; s < expected.sites.size(); ++s) {
    const SiteData& e = expected.sites[s];
    const SiteData& a = actual.sites[s];
    EXPECT_EQ(a.layer, e.layer);
    EXPECT_EQ(a.module, e.module);
    EXPECT_EQ(std::memcmp(&a.prescale, &e.prescale, sizeof(double)), 0)
        << a.prescale << " vs " << e.prescale;
    EXPECT_EQ(a.n_heads, e.n_heads);
    EXPECT_EQ(a.head_dim, e.head_dim);
    EXPECT_EQ(a.head_index, e.head_index);
    EXPECT_TRUE(same_bits(a.q, e.q)) << "layer " << e.layer << " q";
    EXPECT_TRUE(same_bits(a.k, e.k)) << "layer " << e.layer << " k";
  }
}

// A q/k file taken apart, to be changed and written again as a planted file.
struct Parts {
  struct Tensor {
    Dtype dtype;
    Shape shape;
    std::string bytes;
  };
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors;

  static Parts of(const std::string& path) {
    Parts parts;
    const SafetensorsFile file = SafetensorsFile::open(path);
    parts.metadata = file.metadata();
    for (const TensorInfo& t : file.tensors())
      parts.tensors[t.name] = Tensor{t.dtype, t.shape, file.read_bytes(t.name)};
    return parts;
  }

  void write(const std::string& path) const {
    SafetensorsWriter writer;
    for (const auto& [key, value] : metadata) writer.set_metadata(key, value);
    for (const auto& [name, t] : tensors)
      writer.add(name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
    writer.write(path);
  }
};

class QkFileTest : public ::testing::Test {
 protected:
  QkFileTest() : path_(dir_.file("qk.safetensors")), planted_(dir_.file("planted.safetensors")) {
    write_qk_file(path_, make_data(true));
    parts_ = Parts::of(path_);
  }

  // The FormatError read_qk_file throws for `parts` written out; a failure when none.
  std::string error_reading(const Parts& parts) {
    parts.write(planted_);
    try {
      read_qk_file(planted_);
    } catch (const FormatError& e) {
      const std::string message = e.what();
      EXPECT_THAT(message, HasSubstr(planted_));
      return message;
    }
    ADD_FAILURE() << "no FormatError for a planted file";
    return "";
  }

  TempDir dir_;
  std::string path_;
  std::string planted_;
  Parts parts_;
};

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no qkscope::Error thrown";
  return "";
}

// ---------------------------------------------------------------------------------------------
// Round trips and layout

TEST_F(QkFileTest, RoundTripsBitExactly) {
  expect_equal(make_data(true), read_qk_file(path_));
}

TEST_F(QkFileTest, RoundTripsWithoutTokenIds) {
  const std::string path = dir_.file("no_ids.safetensors");
  write_qk_file(path, make_data(false));
  EXPECT_FALSE(SafetensorsFile::open(path).has("tokens.id"));
  const QkData data = read_qk_file(path);
  EXPECT_FALSE(data.has_token_ids());
  expect_equal(make_data(false), data);
}

TEST_F(QkFileTest, RoundTripsWithoutTokensOrSites) {
  const std::string path = dir_.file("empty.safetensors");
  QkData empty;
  write_qk_file(path, empty);
  expect_equal(empty, read_qk_file(path));
  QkData no_tokens;
  no_tokens.sites.push_back(make_site(2, 0, 4, 8, 0.0f));
  write_qk_file(path, no_tokens);
  expect_equal(no_tokens, read_qk_file(path));
}

TEST_F(QkFileTest, WritesTheSpecLayout) {
  const SafetensorsFile file = SafetensorsFile::open(path_);
  const std::map<std::string, std::string> expected = {
      {"format", "qkscope.qk.v1"},
      {"layers", "0,3"},
      {"layer0.module", "encoder.layer.0.attention.self"},
      {"layer0.prescale", "0.57735026918962584"},
      {"layer3.module", ""},
      {"layer3.prescale", "1"},
      {"layer3.heads", "5,2,7"},
      {"tokens_seen", "17"},
      {"sequences_seen", "6"},
  };
  EXPECT_EQ(file.metadata(), expected);
  EXPECT_EQ(file.tensors().size(), 7u);
  EXPECT_EQ(file.info("layer0.q").dtype, Dtype::F32);
  EXPECT_EQ(file.info("layer0.q").shape, (Shape{5, 2, 3}));
  EXPECT_EQ(file.info("layer3.k").shape, (Shape{5, 3, 2}));
  EXPECT_EQ(file.info("tokens.sequence").dtype, Dtype::I64);
  EXPECT_EQ(file.info("tokens.position").shape, (Shape{5}));
  EXPECT_EQ(file.read<int64_t>("tokens.id"), (std::vector<int64_t>{101, 2023, 0, 101, 999999999999}));
}

TEST_F(QkFileTest, ReadsDefaultsForOptionalMetadata) {
  Parts parts = parts_;
  parts.metadata.erase("layer3.heads");
  parts.metadata.erase("tokens_seen");
  parts.metadata.erase("sequences_seen");
  parts.metadata["written_by"] = "another tool";  // unknown keys are ignored
  parts.write(planted_);
  const QkData data = read_qk_file(planted_);
  EXPECT_EQ(data.sites[1].head_index, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(data.tokens_seen, 5);
  EXPECT_EQ(data.sequences_seen, 2);
}

TEST_F(QkFileTest, WriteRejectsInvalidData) {
  QkData data = make_data(true);
  data.sites[0].k.pop_back();
  const std::string path = dir_.file("bad.safetensors");
  EXPECT_THAT(error_of([&] { write_qk_file(path, data); }),
              HasSubstr("q/k size differs from [N, H, D]"));
  EXPECT_FALSE(fs::exists(path));
}

// ---------------------------------------------------------------------------------------------
// Planted files

TEST_F(QkFileTest, RejectsWrongFormatString) {
  Parts parts = parts_;
  parts.metadata["format"] = "qkscope.qk.v2";
  EXPECT_THAT(error_reading(parts), HasSubstr("wrong format string"));
  parts.metadata.erase("format");
  const std::string message = error_reading(parts);
  EXPECT_THAT(message, HasSubstr("missing metadata"));
  EXPECT_THAT(message, HasSubstr("'format'"));
}

TEST_F(QkFileTest, RejectsMissingTensors) {
  for (const char* name : {"layer0.q", "layer3.k", "tokens.sequence", "tokens.position"}) {
    Parts parts = parts_;
    parts.tensors.erase(name);
    const std::string message = error_reading(parts);
    EXPECT_THAT(message, HasSubstr("missing tensor"));
    EXPECT_THAT(message, HasSubstr(name));
  }
}

TEST_F(QkFileTest, RejectsUnexpectedTensor) {
  Parts parts = parts_;
  parts.tensors["layer1.q"] = parts.tensors["layer0.q"];  // layer 1 is not in "layers"
  EXPECT_THAT(error_reading(parts), HasSubstr("unexpected tensor"));
}

TEST_F(QkFileTest, RejectsWrongDtype) {
  Parts parts = parts_;
  Parts::Tensor& q = parts.tensors["layer0.q"];
  q.dtype = Dtype::I32;  // same size: only the dtype is wrong
  std::string message = error_reading(parts);
  EXPECT_THAT(message, HasSubstr("dtype mismatch"));
  EXPECT_THAT(message, HasSubstr("layer0.q"));

  parts = parts_;
  Parts::Tensor& position = parts.tensors["tokens.position"];
  position.dtype = Dtype::F64;
  message = error_reading(parts);
  EXPECT_THAT(message, HasSubstr("dtype mismatch"));
  EXPECT_THAT(message, HasSubstr("tokens.position"));
}

TEST_F(QkFileTest, RejectsWrongShape) {
  Parts parts = parts_;
  parts.tensors["layer0.q"].shape = {5, 6};
  parts.tensors["layer0.k"].shape = {5, 6};
  EXPECT_THAT(error_reading(parts), HasSubstr("shape mismatch"));

  parts = parts_;
  parts.tensors["tokens.sequence"].shape = {5, 1};
  EXPECT_THAT(error_reading(parts), HasSubstr("shape mismatch"));
}

TEST_F(QkFileTest, RejectsTokenCountMismatchBetweenLayers) {
  // Layer 3 with 4 tokens (drop the last token's 3 x 2 floats from q and k).
  Parts parts = parts_;
  for (const char* name : {"layer3.q", "layer3.k"}) {
    Parts::Tensor& t = parts.tensors[name];
    t.shape = {4, 3, 2};
    t.bytes.resize(4 * 3 * 2 * sizeof(float));
  }
  const std::string message = error_reading(parts);
  EXPECT_THAT(message, HasSubstr("token count mismatch"));
  EXPECT_THAT(message, HasSubstr("layer3.q"));

  parts = parts_;
  parts.tensors["tokens.id"].shape = {4};
  parts.tensors["tokens.id"].bytes.resize(4 * sizeof(int64_t));
  EXPECT_THAT(error_reading(parts), HasSubstr("token count mismatch"));
}

TEST_F(QkFileTest, RejectsQkShapeMismatch) {
  Parts parts = parts_;
  parts.tensors["layer0.k"].shape = {5, 3, 2};  // same bytes, other H and D
  EXPECT_THAT(error_reading(parts), HasSubstr("q/k shape mismatch"));
}

TEST_F(QkFileTest, RejectsBadMetadataNumbers) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"layer0.prescale", "abc"}, {"layer0.prescale", "0"},     {"layer0.prescale", "nan"},
      {"layer0.prescale", "-1"},  {"layer0.prescale", " 1"},    {"layer0.prescale", "1e999"},
      {"layer3.heads", "5,2,x"},  {"layer3.heads", "5,-2,7"},   {"tokens_seen", "-1"},
      {"sequences_seen", "6.5"},  {"tokens_seen", ""},
  };
  for (const auto& [key, value] : bad) {
    Parts parts = parts_;
    parts.metadata[key] = value;
    const std::string message = error_reading(parts);
    EXPECT_THAT(message, HasSubstr("bad metadata number")) << key << "=" << value;
    EXPECT_THAT(message, HasSubstr(key));
  }
}

TEST_F(QkFileTest, RejectsBadLayersList) {
  for (const char* layers : {"0,,3", "3,0", "0,0,3", "0, 3", "zero", "-1,3", "0,3,"}) {
    Parts parts = parts_;
    parts.metadata["layers"] = layers;
    EXPECT_THAT(error_reading(parts), HasSubstr("bad layers list")) << layers;
  }
}

TEST_F(QkFileTest, RejectsHeadListOfWrongLength) {
  Parts parts = parts_;
  parts.metadata["layer3.heads"] = "5,2";
  EXPECT_THAT(error_reading(parts), HasSubstr("head list does not match H"));
  parts.metadata["layer3.heads"] = "5,5,7";
  EXPECT_THAT(error_reading(parts), HasSubstr("head numbers not distinct"));
}

TEST_F(QkFileTest, RejectsMissingSiteMetadata) {
  for (const char* key : {"layer0.module", "layer3.prescale", "layers"}) {
    Parts parts = parts_;
    parts.metadata.erase(key);
    const std::string message = error_reading(parts);
    EXPECT_THAT(message, HasSubstr("missing metadata"));
    EXPECT_THAT(message, HasSubstr(key));
  }
}

TEST_F(QkFileTest, RejectsUnsortedTokens) {
  Parts parts = parts_;
  std::string& bytes = parts.tensors["tokens.position"].bytes;
  const int64_t swapped[] = {1, 0, 3, 0, 1};
  std::memcpy(bytes.data(), swapped, sizeof(swapped));
  EXPECT_THAT(error_reading(parts), HasSubstr("tokens not sorted by sequence, then position"));
}

TEST_F(QkFileTest, RejectsCorruptedBytes) {
  std::ifstream in(path_, std::ios::binary);
  const std::string bytes(std::istreambuf_iterator<char>(in), {});
  for (const std::size_t size : {std::size_t{0}, std::size_t{5}, std::size_t{8}, std::size_t{40},
                                 bytes.size() / 2, bytes.size() - 1}) {
    std::ofstream(planted_, std::ios::binary | std::ios::trunc) << bytes.substr(0, size);
    EXPECT_THROW(read_qk_file(planted_), FormatError) << "truncated to " << size;
  }
  std::ofstream(planted_, std::ios::binary | std::ios::trunc) << bytes << "extra";
  EXPECT_THAT(error_of([&] { read_qk_file(planted_); }), HasSubstr("trailing bytes"));
}

// The bundled example, written by tools/make_example_qk.py (numpy and a hand-made header): an
// independent writer that the reader must agree with.
TEST(QkFileExampleTest, ReadsBundledExample) {
  const fs::path path =
      fs::path(__FILE__).parent_path() / ".." / ".." / "examples" / "example_qk.safetensors";
  const QkData data = read_qk_file(path.string());
  ASSERT_EQ(data.sites.size(), 2u);
  EXPECT_EQ(data.n_tokens(), 371);
  EXPECT_EQ(data.sequences_seen, 30);
  EXPECT_EQ(data.tokens_seen, 371);
  EXPECT_TRUE(data.has_token_ids());
  EXPECT_EQ(data.token_id.front(), 101);
  EXPECT_EQ(data.token_id.back(), 102);
  EXPECT_EQ(data.sequence.back(), 29);
  for (int layer = 0; layer < 2; ++layer) {
    const SiteData& site = data.sites[layer];
    EXPECT_EQ(site.layer, layer);
    EXPECT_EQ(site.module, fmt::format("encoder.layer.{}.attention.self", layer));
    EXPECT_EQ(site.prescale, 1.0);
    EXPECT_EQ(site.n_heads, 4);
    EXPECT_EQ(site.head_dim, 16);
    EXPECT_EQ(site.head_index, (std::vector<int>{0, 1, 2, 3}));
  }
}

// ---------------------------------------------------------------------------------------------
// validate()

TEST(QkDataValidateTest, AcceptsConsistentData) {
  EXPECT_NO_THROW(validate(make_data(true), "mem"));
  EXPECT_NO_THROW(validate(make_data(false), "mem"));
  EXPECT_NO_THROW(validate(QkData{}, "mem"));
}

TEST(QkDataValidateTest, NamesTheBrokenInvariant) {
  const auto broken = [](const std::function<void(QkData&)>& change) {
    QkData data = make_data(true);
    change(data);
    return error_of([&] { validate(data, "where.safetensors"); });
  };
  EXPECT_THAT(broken([](QkData& d) { d.position.pop_back(); }),
              HasSubstr("token arrays differ in length"));
  EXPECT_THAT(broken([](QkData& d) { d.token_id.pop_back(); }),
              HasSubstr("token arrays differ in length"));
  EXPECT_THAT(broken([](QkData& d) { d.sequence[0] = -1; }),
              HasSubstr("negative sequence index or position"));
  EXPECT_THAT(broken([](QkData& d) { d.position[1] = 0; }),
              HasSubstr("tokens not sorted by sequence, then position"));
  EXPECT_THAT(broken([](QkData& d) { d.tokens_seen = -1; }), HasSubstr("negative count"));
  EXPECT_THAT(broken([](QkData& d) { d.sites[1].layer = 0; }),
              HasSubstr("sites not in increasing layer order"));
  EXPECT_THAT(broken([](QkData& d) { d.sites[0].layer = -1; }), HasSubstr("negative layer number"));
  EXPECT_THAT(broken([](QkData& d) { d.sites[0].prescale = 0; }),
              HasSubstr("prescale not a positive finite number"));
  EXPECT_THAT(broken([](QkData& d) { d.sites[0].head_index.push_back(9); }),
              HasSubstr("head_index size differs from n_heads"));
  EXPECT_THAT(broken([](QkData& d) { d.sites[1].head_index[0] = 7; }),
              HasSubstr("head numbers not distinct non-negative integers"));
  EXPECT_THAT(broken([](QkData& d) { d.sites[0].n_heads = 0; }), HasSubstr("site without heads"));
  EXPECT_THAT(broken([](QkData& d) { d.sites[0].q.push_back(1.0f); }),
              HasSubstr("q/k size differs from [N, H, D]"));
  EXPECT_THAT(broken([](QkData& d) { d.sites[0].q.clear(); }), HasSubstr("where.safetensors"));
}

}  // namespace
}  // namespace qkscope
