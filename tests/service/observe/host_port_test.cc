// The one parser of network addresses (flags, job keys, environment variables).
#include "hybridshard/service/events/host_port.h"

#include <gtest/gtest.h>

#include "hybridshard/core/error.h"

namespace hybridshard::service {
namespace {

TEST(HostPortTest, ipv4_ipv6_and_host_names_parse) {
  const HostPort v4 = parse_host_port("127.0.0.1:9464", "x");
  EXPECT_EQ(v4.host, "127.0.0.1");
  EXPECT_EQ(v4.port, 9464);
  EXPECT_FALSE(v4.ipv6);
  const HostPort v6 = parse_host_port("[::1]:0", "x");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.port, 0);
  EXPECT_TRUE(v6.ipv6);
  EXPECT_EQ(v6.text(), "[::1]:0");
  EXPECT_EQ(parse_host_port("node-3.cluster.example:65535", "x").host, "node-3.cluster.example");
  EXPECT_EQ(parse_host_port("255.255.255.255:1", "x").port, 1);
}

TEST(HostPortTest, out_of_range_octets_ports_and_malformed_addresses_are_refused_naming_the_source) {
  for (const char* bad : {"256.0.0.0:9464",
                          "999.1.1.1:1",
                          "1.2.3:1",
                          "1.2.3.4.5:1",
                          "01.2.3.4:1",
                          "127.0.0.1:",
                          "127.0.0.1:99999999999",
                          "127.0.0.1:65536",
                          "127.0.0.1:-1",
                          "127.0.0.1:http",
                          ":9464",
                          "9464",
                          "::1:80",
                          "[::1]80",
                          "[::1",
                          "[nonsense]:1",
                          "-host:1",
                          "host_name:1",
                          "a..b:1",
                          ""}) {
    EXPECT_THROW(parse_host_port(bad, "HYBRIDSHARD_EVENTS"), core::ConfigError) << bad;
    EXPECT_NE(host_port_problem(bad), "") << bad;
  }
  try {
    parse_host_port("256.0.0.0:9464", "--metrics-listen");
    FAIL();
  } catch (const core::ConfigError& error) {
    const std::string text = error.what();
    EXPECT_NE(text.find("--metrics-listen '256.0.0.0:9464': '256' is not an IPv4 octet (0..255)"), std::string::npos)
        << text;
  }
  try {
    parse_host_port("127.0.0.1:99999999999", "HYBRIDSHARD_EVENTS");
    FAIL();
  } catch (const core::ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("HYBRIDSHARD_EVENTS '127.0.0.1:99999999999': the port"), std::string::npos)
        << error.what();
  }
}

TEST(HostPortTest, all_interfaces_are_recognised_and_warned_about) {
  EXPECT_TRUE(parse_host_port("0.0.0.0:1", "x").all_interfaces());
  EXPECT_TRUE(parse_host_port("[::]:1", "x").all_interfaces());
  EXPECT_TRUE(parse_host_port("[0:0::0]:1", "x").all_interfaces());
  EXPECT_FALSE(parse_host_port("127.0.0.1:1", "x").all_interfaces());
  EXPECT_FALSE(parse_host_port("[::1]:1", "x").all_interfaces());
  EXPECT_EQ(all_interfaces_warning(parse_host_port("127.0.0.1:1", "x"), "x"), "");
  const std::string warning = all_interfaces_warning(parse_host_port("0.0.0.0:9464", "x"), "--metrics-listen");
  EXPECT_NE(warning.find("--metrics-listen 0.0.0.0:9464"), std::string::npos) << warning;
  EXPECT_NE(warning.find("every network interface"), std::string::npos) << warning;
}

}  // namespace
}  // namespace hybridshard::service
