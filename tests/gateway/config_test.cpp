// The cluster file (--cluster), parsed with the rest of the configuration.
#include "gateway/config.hpp"

#include <gtest/gtest.h>

namespace chat {
namespace {

std::string must_fail(const std::string& text) {
  cluster_config c;
  std::string err;
  EXPECT_FALSE(parse_cluster_config(text, c, err)) << text;
  EXPECT_FALSE(err.empty()) << text;
  return err;
}

TEST(ClusterFile, ReadsEveryNode) {
  cluster_config c;
  std::string err;
  ASSERT_TRUE(parse_cluster_config(R"({"nodes":[
      {"name":"n1","listen":"127.0.0.1:8081","remoting":"127.0.0.1:9081"},
      {"name":"n2","listen":"0.0.0.0:8082","remoting":"10.0.0.2:9082","comment":"ignored"}]})",
                                   c, err))
      << err;
  ASSERT_EQ(c.nodes.size(), 2u);
  EXPECT_EQ(c.nodes[0].name, "n1");
  EXPECT_EQ(c.nodes[0].listen, "127.0.0.1:8081");
  EXPECT_EQ(c.nodes[0].remote_host, "127.0.0.1");
  EXPECT_EQ(c.nodes[0].remote_port, 9081);
  EXPECT_EQ(c.nodes[1].name, "n2");
  EXPECT_EQ(c.nodes[1].remote_host, "10.0.0.2");
  EXPECT_EQ(c.nodes[1].remote_port, 9082);

  // A second parse replaces what the first found.
  ASSERT_TRUE(parse_cluster_config(
      R"({"nodes":[{"name":"solo","listen":"h:1","remoting":"h:2"}]})", c, err));
  ASSERT_EQ(c.nodes.size(), 1u);
  EXPECT_EQ(c.nodes[0].name, "solo");
}

TEST(ClusterFile, RefusesWhatIsNotAClusterFile) {
  for (auto bad : {"", "not json", "[]", "{}", R"({"nodes":{}})", R"({"nodes":[]})"})
    EXPECT_NE(must_fail(bad).find("expected"), std::string::npos) << bad;
  for (auto bad : {R"({"nodes":[1]})", R"({"nodes":[{"name":"a","listen":"h:1"}]})",
                   R"({"nodes":[{"name":"a","listen":"h:1","remoting":9}]})",
                   R"({"nodes":[{"name":null,"listen":"h:1","remoting":"h:2"}]})"})
    EXPECT_NE(must_fail(bad).find("string fields"), std::string::npos) << bad;
}

TEST(ClusterFile, RefusesBadAddressesAndTwins) {
  EXPECT_NE(must_fail(R"({"nodes":[{"name":"a","listen":"h","remoting":"h:2"}]})").find("host:port"),
            std::string::npos);
  EXPECT_NE(must_fail(R"({"nodes":[{"name":"a","listen":"h:1","remoting":"h"}]})").find("host:port"),
            std::string::npos);
  EXPECT_NE(must_fail(R"({"nodes":[{"name":"","listen":"h:1","remoting":"h:2"}]})").find("host:port"),
            std::string::npos);
  for (auto port : {"0", "65536", "x", "-5", ""})
    EXPECT_NE(must_fail(std::string(R"({"nodes":[{"name":"a","listen":"h:1","remoting":"h:)") +
                        port + "\"}]}")
                  .find("bad remoting port"),
              std::string::npos)
        << port;
  EXPECT_NE(must_fail(R"({"nodes":[{"name":"a","listen":"h:1","remoting":"h:2"},
                                   {"name":"a","listen":"h:3","remoting":"h:4"}]})")
                .find("appears twice"),
            std::string::npos);
}

}  // namespace
}  // namespace chat
