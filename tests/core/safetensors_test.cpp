// The safetensors reader and writer: exact bytes against hand-written files, round trips, and
// one planted corruption per rule the reader enforces (the message must name the rule).
#include "qkscope/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "qkscope/atomic_file.h"
#include "qkscope/error.h"

namespace qkscope {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace std::string_literals;

// A fresh folder per test, removed afterwards.
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
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string le64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// A file from a header text and a data section, the way a hand-written fixture is made.
std::string file_of(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

// The message of the FormatError that `parse` throws; a test failure when it throws nothing.
std::string format_error(const std::string& bytes) {
  try {
    SafetensorsFile::from_bytes(bytes, "planted.safetensors");
  } catch (const FormatError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no FormatError for a corrupted file";
  return "";
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no qkscope::Error thrown";
  return "";
}

// One F32 tensor "t" of shape [2] plus the given data section.
const std::string kOneTensor = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

// ---------------------------------------------------------------------------------------------
// Exact bytes

TEST(SafetensorsTest, ReadsHandWrittenFile) {
  const std::string header =
      R"({"__metadata__":{"k":"v","empty":""},)"
      R"("b":{"dtype":"I64","shape":[2],"data_offsets":[8,24]},)"
      R"("a":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]}})";
  // 1.0f, -2.5f, then int64 7 and -1, little-endian.
  const std::string data = "\x00\x00\x80\x3f"s + "\x00\x00\x20\xc0"s +
                           "\x07\x00\x00\x00\x00\x00\x00\x00"s +
                           "\xff\xff\xff\xff\xff\xff\xff\xff"s;
  const SafetensorsFile file = SafetensorsFile::from_bytes(file_of(header, data), "hand");

  ASSERT_EQ(file.tensors().size(), 2u);
  EXPECT_EQ(file.tensors()[0].name, "a");  // data order, not header order
  EXPECT_EQ(file.tensors()[1].name, "b");
  EXPECT_EQ(file.info("a").dtype, Dtype::F32);
  EXPECT_EQ(file.info("a").shape, (Shape{2, 1}));
  EXPECT_EQ(file.info("b").begin, 8u);
  EXPECT_EQ(file.info("b").end, 24u);
  EXPECT_EQ(file.read<float>("a", Shape{2, 1}), (std::vector<float>{1.0f, -2.5f}));
  EXPECT_EQ(file.read<int64_t>("b"), (std::vector<int64_t>{7, -1}));
  EXPECT_EQ(file.read_bytes("b"), data.substr(8));
  EXPECT_EQ(file.metadata_value("k"), "v");
  EXPECT_EQ(file.metadata_value("empty"), "");
  EXPECT_EQ(file.metadata().size(), 2u);
}

TEST(SafetensorsTest, WriterBytesMatchHandWrittenFile) {
  const std::vector<float> x = {1.0f, -2.5f};
  const std::vector<int64_t> n = {7};
  SafetensorsWriter writer;
  writer.set_metadata("k", "v");
  writer.add("x", Shape{2}, x);
  writer.add("n", Shape{1}, n);  // 8-byte elements go first, so both stay aligned

  const std::string header =
      R"({"__metadata__":{"k":"v"},)"
      R"("n":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("x":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})"
      "   ";  // 133 bytes of JSON padded to 136
  const std::string expected = "\x88\x00\x00\x00\x00\x00\x00\x00"s + header +
                               "\x07\x00\x00\x00\x00\x00\x00\x00"s + "\x00\x00\x80\x3f"s +
                               "\x00\x00\x20\xc0"s;
  EXPECT_EQ(writer.header(), header);
  EXPECT_EQ(writer.bytes(), expected);
}

TEST(SafetensorsTest, WriterOmitsEmptyMetadata) {
  SafetensorsWriter writer;
  EXPECT_EQ(writer.bytes(), "\x08\x00\x00\x00\x00\x00\x00\x00{}      "s);
  const SafetensorsFile file = SafetensorsFile::from_bytes(writer.bytes(), "empty");
  EXPECT_TRUE(file.tensors().empty());
  EXPECT_TRUE(file.metadata().empty());
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(SafetensorsTest, RoundTripsEveryTypedDtypeThroughAFile) {
  TempDir dir;
  const std::vector<float> f32 = {0.0f, -0.0f, 1e-45f, 3.4e38f, -1.5f, 0.1f};
  const std::vector<double> f64 = {0.1, -1e308, 5e-324};
  const std::vector<int64_t> i64 = {INT64_MIN, -1, 0, INT64_MAX};
  const std::vector<int32_t> i32 = {INT32_MIN, 5, INT32_MAX};
  const std::vector<uint8_t> u8 = {0, 1, 255};
  const std::vector<float> empty;
  SafetensorsWriter writer;
  writer.add("u8", Shape{3}, u8);
  writer.add("f32", Shape{2, 3}, f32);
  writer.add("empty", Shape{0, 4}, empty);
  writer.add("i32", Shape{3}, i32);
  writer.add("f64", Shape{3}, f64);
  writer.add("i64", Shape{2, 2}, i64);
  writer.set_metadata("note", "ünïcode ✓");
  writer.write(dir.file("all.safetensors"));

  const SafetensorsFile file = SafetensorsFile::open(dir.file("all.safetensors"));
  EXPECT_EQ(file.read<float>("f32", Shape{2, 3}), f32);
  EXPECT_EQ(file.read<double>("f64"), f64);
  EXPECT_EQ(file.read<int64_t>("i64", Shape{SafetensorsFile::kAnyDim, 2}), i64);
  EXPECT_EQ(file.read<int32_t>("i32"), i32);
  EXPECT_EQ(file.read<uint8_t>("u8"), u8);
  EXPECT_EQ(file.read<float>("empty", Shape{0, 4}), empty);
  EXPECT_EQ(file.metadata_value("note"), "ünïcode ✓");
  for (const TensorInfo& t : file.tensors())
    EXPECT_EQ(t.begin % dtype_size(t.dtype), 0u) << t.name << " is not aligned";
}

TEST(SafetensorsTest, ReadsOtherDtypesAsBytes) {
  const std::string header = R"({"h":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})";
  const SafetensorsFile file = SafetensorsFile::from_bytes(file_of(header, "\x80\x3f\x00\xc0"s), "x");
  EXPECT_EQ(file.info("h").dtype, Dtype::BF16);
  EXPECT_EQ(file.read_bytes("h"), "\x80\x3f\x00\xc0"s);
  EXPECT_THAT(error_of([&] { file.read<float>("h"); }), HasSubstr("dtype mismatch"));
}

TEST(SafetensorsTest, DtypeNamesRoundTrip) {
  for (const char* name : {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
                           "I32", "U32", "F32", "F64", "I64", "U64"}) {
    const std::optional<Dtype> dtype = parse_dtype(name);
    ASSERT_TRUE(dtype.has_value()) << name;
    EXPECT_STREQ(dtype_name(*dtype), name);
  }
  EXPECT_EQ(dtype_size(Dtype::BF16), 2u);
  EXPECT_FALSE(parse_dtype("float32").has_value());
}

// ---------------------------------------------------------------------------------------------
// Planted corruptions: one per rule

TEST(SafetensorsTest, RejectsFileShorterThanEightBytes) {
  for (const std::string& bytes : {""s, "\x01"s, "\x00\x00\x00\x00\x00\x00\x00"s})
    EXPECT_THAT(format_error(bytes), HasSubstr("file shorter than 8 bytes"));
}

TEST(SafetensorsTest, RejectsHeaderLengthPastEnd) {
  EXPECT_THAT(format_error(le64(100) + "{}"), HasSubstr("header length past end of file"));
  // A length near 2^64 is refused before any arithmetic on it could wrap.
  EXPECT_THAT(format_error(le64(UINT64_MAX) + "{}"), HasSubstr("header length absurd"));
}

TEST(SafetensorsTest, RejectsAbsurdHeaderLength) {
  const std::string message = format_error(le64(100'000'001) + "{}");
  EXPECT_THAT(message, HasSubstr("header length absurd"));
  EXPECT_THAT(message, HasSubstr("planted.safetensors"));
}

TEST(SafetensorsTest, RejectsTruncationAtEveryByte) {
  const std::vector<float> x = {1, 2, 3};
  const std::vector<int64_t> n = {4, 5};
  SafetensorsWriter writer;
  writer.set_metadata("k", "v");
  writer.add("x", Shape{3}, x);
  writer.add("n", Shape{2}, n);
  const std::string bytes = writer.bytes();
  const std::size_t data_start = 8 + writer.header().size();
  for (std::size_t size = 0; size < bytes.size(); ++size) {
    const std::string message = format_error(bytes.substr(0, size));
    if (size < 8) EXPECT_THAT(message, HasSubstr("file shorter than 8 bytes")) << size;
    else if (size < data_start) EXPECT_THAT(message, HasSubstr("header length past end")) << size;
    else EXPECT_THAT(message, HasSubstr("tensor data past end of data section")) << size;
  }
  EXPECT_NO_THROW(SafetensorsFile::from_bytes(bytes, "whole"));
}

TEST(SafetensorsTest, RejectsHeaderThatIsNotJson) {
  EXPECT_THAT(format_error(file_of(R"({"t": {"dtype": "F32",)")),
              HasSubstr("header is not valid JSON"));
  EXPECT_THAT(format_error(file_of("{\"t\":\"\xff\"}")), HasSubstr("header is not valid JSON"));
  EXPECT_THAT(format_error(file_of("\x00\x00\x00\x00"s)), HasSubstr("header is not a JSON object"));
}

TEST(SafetensorsTest, RejectsHeaderThatIsNotAnObject) {
  EXPECT_THAT(format_error(file_of("[1, 2]  ")), HasSubstr("header is not a JSON object"));
  EXPECT_THAT(format_error(file_of(" {}")), HasSubstr("header is not a JSON object"));
  EXPECT_THAT(format_error(file_of("")), HasSubstr("header is not a JSON object"));
}

TEST(SafetensorsTest, RejectsDuplicateKeys) {
  const std::string header = R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_THAT(format_error(file_of(header, std::string(8, '\0'))),
              HasSubstr("duplicate key in header"));
  EXPECT_THAT(format_error(file_of(R"({"__metadata__":{"a":"1","a":"2"}})")),
              HasSubstr("duplicate key in header"));
}

TEST(SafetensorsTest, RejectsDeepNesting) {
  EXPECT_THAT(format_error(file_of(R"({"t":{"dtype":"F32","shape":[[2]],"data_offsets":[0,8]}})",
                                   std::string(8, '\0'))),
              HasSubstr("header nested too deeply"));
  // Deep enough to overflow the stack of a recursive parser or printer.
  const std::string deep = "{\"t\":" + std::string(1'000'000, '[') + std::string(1'000'000, ']') + "}";
  EXPECT_THAT(format_error(file_of(deep)), HasSubstr("header nested too deeply"));
}

TEST(SafetensorsTest, RejectsEntriesMissingFields) {
  const std::string data(8, '\0');
  EXPECT_THAT(format_error(file_of(R"({"t":{"shape":[2],"data_offsets":[0,8]}})", data)),
              HasSubstr("tensor entry missing 'dtype'"));
  EXPECT_THAT(format_error(file_of(R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", data)),
              HasSubstr("tensor entry missing 'shape'"));
  const std::string message = format_error(file_of(R"({"t":{"dtype":"F32","shape":[2]}})", data));
  EXPECT_THAT(message, HasSubstr("tensor entry missing 'data_offsets'"));
  EXPECT_THAT(message, HasSubstr("tensor 't'"));
  EXPECT_THAT(format_error(file_of(R"({"t":[1]})")), HasSubstr("tensor entry is not an object"));
  EXPECT_THAT(
      format_error(file_of(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", data)),
      HasSubstr("unknown key in tensor entry"));
}

TEST(SafetensorsTest, RejectsUnknownDtype) {
  EXPECT_THAT(format_error(file_of(R"({"t":{"dtype":"float32","shape":[2],"data_offsets":[0,8]}})",
                                   std::string(8, '\0'))),
              HasSubstr("unknown dtype"));
  EXPECT_THAT(format_error(file_of(R"({"t":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})",
                                   std::string(8, '\0'))),
              HasSubstr("unknown dtype"));
}

TEST(SafetensorsTest, RejectsBadShape) {
  for (const char* shape : {"[-2]", "[2.0]", "[\"2\"]", "2", "[18446744073709551615]"}) {
    const std::string header =
        fmt::format(R"({{"t":{{"dtype":"F32","shape":{},"data_offsets":[0,8]}}}})", shape);
    EXPECT_THAT(format_error(file_of(header, std::string(8, '\0'))),
                HasSubstr("shape is not an array of non-negative integers"))
        << shape;
  }
}

TEST(SafetensorsTest, RejectsBadOffsets) {
  for (const char* offsets : {"[0]", "[0,8,8]", "[8,0]", "[-1,7]", "[0,8.0]", "{}"}) {
    const std::string header =
        fmt::format(R"({{"t":{{"dtype":"F32","shape":[2],"data_offsets":{}}}}})", offsets);
    EXPECT_THAT(format_error(file_of(header, std::string(8, '\0'))),
                HasSubstr("data_offsets is not [begin, end] with begin <= end"))
        << offsets;
  }
}

TEST(SafetensorsTest, RejectsOffsetsPastDataSection) {
  const std::string message = format_error(file_of(kOneTensor, std::string(7, '\0')));
  EXPECT_THAT(message, HasSubstr("tensor data past end of data section"));
  EXPECT_THAT(message, HasSubstr("tensor 't'"));
}

TEST(SafetensorsTest, RejectsSizeNotMatchingShape) {
  const std::string header = R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  const std::string message = format_error(file_of(header, std::string(8, '\0')));
  EXPECT_THAT(message, HasSubstr("byte size does not match shape and dtype"));
  EXPECT_THAT(message, HasSubstr("tensor 't'"));
}

TEST(SafetensorsTest, RejectsShapeWhoseByteSizeOverflows) {
  // 2^32 * 2^32 elements: the product wraps to 0 in 64 bits and would match [0, 0].
  const std::string header =
      R"({"t":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})";
  EXPECT_THAT(format_error(file_of(header)), HasSubstr("tensor byte size overflows"));
  // With a zero dimension the tensor is empty whatever the others are.
  const std::string empty =
      R"({"t":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})";
  EXPECT_EQ(SafetensorsFile::from_bytes(file_of(empty), "x").info("t").numel(), 0);
}

TEST(SafetensorsTest, RejectsOverlappingTensors) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  const std::string message = format_error(file_of(header, std::string(12, '\0')));
  EXPECT_THAT(message, HasSubstr("overlapping tensors"));
  EXPECT_THAT(message, HasSubstr("'a'"));
  EXPECT_THAT(message, HasSubstr("'b'"));
  // Both at the same place.
  const std::string same = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_THAT(format_error(file_of(same, std::string(8, '\0'))), HasSubstr("overlapping tensors"));
}

TEST(SafetensorsTest, RejectsHolesAndTrailingBytes) {
  const std::string hole = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  EXPECT_THAT(format_error(file_of(hole, std::string(12, '\0'))), HasSubstr("hole in data section"));
  EXPECT_THAT(format_error(file_of(kOneTensor, std::string(9, '\0'))),
              HasSubstr("trailing bytes in data section"));
  EXPECT_THAT(format_error(file_of("{}", "x")), HasSubstr("trailing bytes in data section"));
}

TEST(SafetensorsTest, RejectsMetadataThatIsNotAnObjectOfStrings) {
  EXPECT_THAT(format_error(file_of(R"({"__metadata__":{"n":1}})")),
              HasSubstr("__metadata__ is not an object of strings"));
  EXPECT_THAT(format_error(file_of(R"({"__metadata__":["a"]})")),
              HasSubstr("__metadata__ is not an object of strings"));
  EXPECT_THAT(format_error(file_of(R"({"__metadata__":null})")),
              HasSubstr("__metadata__ is not an object of strings"));
}

// ---------------------------------------------------------------------------------------------
// Typed access

TEST(SafetensorsTest, TypedReadChecksDtypeShapeAndName) {
  const SafetensorsFile file = SafetensorsFile::from_bytes(file_of(kOneTensor, std::string(8, '\0')), "f");
  std::string message = error_of([&] { file.read<int32_t>("t"); });
  EXPECT_THAT(message, HasSubstr("dtype mismatch"));
  EXPECT_THAT(message, HasSubstr("tensor 't' is F32, expected I32"));
  message = error_of([&] { file.read<float>("t", Shape{3}); });
  EXPECT_THAT(message, HasSubstr("shape mismatch"));
  EXPECT_THAT(message, HasSubstr("tensor 't'"));
  EXPECT_THAT(error_of([&] { file.read<float>("t", Shape{2, 1}); }), HasSubstr("shape mismatch"));
  EXPECT_EQ(file.read<float>("t", Shape{SafetensorsFile::kAnyDim}).size(), 2u);
  message = error_of([&] { file.read<float>("u"); });
  EXPECT_THAT(message, HasSubstr("missing tensor"));
  EXPECT_THAT(message, HasSubstr("'u'"));
  EXPECT_THAT(error_of([&] { file.metadata_value("format"); }), HasSubstr("missing metadata"));
  EXPECT_FALSE(file.has("u"));
  EXPECT_TRUE(file.has("t"));
}

TEST(SafetensorsTest, OpenNamesMissingFile) {
  TempDir dir;
  const std::string path = dir.file("absent.safetensors");
  EXPECT_THAT(error_of([&] { SafetensorsFile::open(path); }), HasSubstr(path));
}

TEST(SafetensorsTest, OpenedFileNamesItselfInErrors) {
  TempDir dir;
  const std::string path = dir.file("short.safetensors");
  std::ofstream(path, std::ios::binary) << le64(1000) << "{}";
  const std::string message = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("header length past end of file"));
}

// ---------------------------------------------------------------------------------------------
// Writer misuse

TEST(SafetensorsTest, WriterRejectsBadTensors) {
  const std::vector<float> three = {1, 2, 3};
  SafetensorsWriter writer;
  EXPECT_THAT(error_of([&] { writer.add("x", Shape{2}, three); }), HasSubstr("12 bytes were given"));
  EXPECT_THAT(error_of([&] { writer.add("x", Shape{-3}, three); }), HasSubstr("negative dimension"));
  EXPECT_THAT(error_of([&] { writer.add("__metadata__", Shape{3}, three); }),
              HasSubstr("reserved"));
  writer.add("x", Shape{3}, three);
  EXPECT_THAT(error_of([&] { writer.add("x", Shape{3}, three); }), HasSubstr("added twice"));
  writer.set_metadata("bad", "\xff");
  EXPECT_THAT(error_of([&] { writer.bytes(); }), HasSubstr("UTF-8"));
}

// ---------------------------------------------------------------------------------------------
// Atomic writes

TEST(SafetensorsTest, AtomicWriteLeavesOnlyTheFinalFile) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  write_bytes_atomically(path, "old");
  write_bytes_atomically(path, "new contents");
  std::ifstream in(path, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "new contents");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(SafetensorsTest, AtomicWriteWithoutCommitLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  {
    AtomicFile out(path);
    out.write("partial");
    EXPECT_TRUE(fs::exists(out.temp_path()));
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(SafetensorsTest, AtomicWriteNamesUnwritableFolder) {
  TempDir dir;
  const std::string path = dir.file("missing/out.bin");
  const std::string message = error_of([&] { write_bytes_atomically(path, "x"); });
  EXPECT_THAT(message, HasSubstr(path));
}

}  // namespace
}  // namespace qkscope
