#include <gtest/gtest.h>

#include <cmath>

#include "qkscope/error.h"
#include "qkscope/metrics.h"

namespace qkscope {
namespace {

TEST(OptionsTest, ParsesScaleLists) {
  EXPECT_EQ(parse_scales("0.2,0.4,0.8,1,1.25,2.5,5"), (std::vector<double>{0.2, 0.4, 0.8, 1, 1.25, 2.5, 5}));
  EXPECT_EQ(parse_scales("3"), std::vector<double>{3});
}

TEST(OptionsTest, ParsesLogSpacedScales) {
  auto s = parse_scales("log:0.1:10:5");
  ASSERT_EQ(s.size(), 5u);
  const double expected[] = {0.1, std::sqrt(0.1), 1, std::sqrt(10.0), 10};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(s[i], expected[i], 1e-12);
}

TEST(OptionsTest, RejectsBadScalesWithTheReason) {
  for (const char* bad : {"", "0,1", "-1", "1,1", "a", "1,,2", "log:1:0.5:3", "log:0.1:1:1",
                          "log:0.1:1", "log:0:1:3", "log:0.1:1:2.5", "inf", "nan"}) {
    EXPECT_THROW(parse_scales(bad), UsageError) << bad;
  }
  try {
    parse_scales("1,1");
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("appears twice"), std::string::npos);
  }
}

TEST(OptionsTest, ValidatesPercentileAndNames) {
  MetricOptions o;
  for (double p : {0.0, 100.0, -1.0, 150.0, static_cast<double>(NAN)}) {
    o.percentile = p;
    EXPECT_THROW(validate(o), UsageError) << p;
  }
  EXPECT_EQ(parse_pair_scope("causal"), PairScope::causal);
  EXPECT_EQ(parse_select_rule("min"), SelectRule::min);
  EXPECT_THROW(parse_pair_scope("pairs"), UsageError);
  EXPECT_THROW(parse_select_rule("max"), UsageError);
}

}  // namespace
}  // namespace qkscope
