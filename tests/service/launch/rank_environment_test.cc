// Who a rank is, from each launcher's environment variables: ours, torchrun, Slurm, mpirun; and the errors that name
// the variable.
#include "hybridshard/service/launch/rank_environment.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "hybridshard/core/error.h"

namespace hybridshard::service {
namespace {

// Every variable the reader looks at, unset before each test and restored after.
const char* const kVariables[] = {"RANK",
                                  "WORLD_SIZE",
                                  "LOCAL_RANK",
                                  "SLURM_PROCID",
                                  "SLURM_NTASKS",
                                  "SLURM_LOCALID",
                                  "OMPI_COMM_WORLD_RANK",
                                  "OMPI_COMM_WORLD_SIZE",
                                  "OMPI_COMM_WORLD_LOCAL_RANK",
                                  "MASTER_ADDR",
                                  "MASTER_PORT",
                                  "TORCHELASTIC_USE_AGENT_STORE",
                                  "HYBRIDSHARD_LAUNCHER",
                                  "HYBRIDSHARD_EVENTS",
                                  "HYBRIDSHARD_STORE_FILE"};

class RankEnvironmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : kVariables) {
      if (const char* value = std::getenv(name)) saved_[name] = value;
      ::unsetenv(name);
    }
  }
  void TearDown() override {
    for (const char* name : kVariables) ::unsetenv(name);
    for (const auto& [name, value] : saved_) ::setenv(name.c_str(), value.c_str(), 1);
  }
  static void set(const std::map<std::string, std::string>& values) {
    for (const auto& [name, value] : values) ::setenv(name.c_str(), value.c_str(), 1);
  }
  static std::string error_of() {
    try {
      rank_environment_from_env();
    } catch (const core::ConfigError& error) {
      return error.what();
    }
    return "";
  }

 private:
  std::map<std::string, std::string> saved_;
};

TEST_F(RankEnvironmentTest, no_launcher_variables_is_not_a_launched_rank) {
  EXPECT_FALSE(rank_environment_from_env().has_value());
  set({{"RANK", "1"}});  // half of torchrun's pair is not enough
  EXPECT_FALSE(rank_environment_from_env().has_value());
}

TEST_F(RankEnvironmentTest, torchrun_with_its_agent_store) {
  set({{"RANK", "5"},
       {"WORLD_SIZE", "8"},
       {"LOCAL_RANK", "1"},
       {"MASTER_ADDR", "10.0.0.7"},
       {"MASTER_PORT", "29400"},
       {"TORCHELASTIC_USE_AGENT_STORE", "True"}});
  const auto env = rank_environment_from_env();
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->launcher, "torchrun");
  EXPECT_EQ(env->rank, 5);
  EXPECT_EQ(env->world_size, 8);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->master_addr, "10.0.0.7");
  EXPECT_EQ(env->master_port, 29400);
  EXPECT_TRUE(env->store_hosted_elsewhere);
  EXPECT_EQ(env->events_address, "");
  EXPECT_FALSE(env->host.empty());

  ::unsetenv("TORCHELASTIC_USE_AGENT_STORE");
  EXPECT_FALSE(rank_environment_from_env()->store_hosted_elsewhere) << "without the agent's store rank 0 hosts one";
}

TEST_F(RankEnvironmentTest, our_launcher_hosts_the_store_and_takes_the_events) {
  set({{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"HYBRIDSHARD_LAUNCHER", "1"}, {"HYBRIDSHARD_EVENTS", "127.0.0.1:4000"}});
  const auto env = rank_environment_from_env();
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->launcher, "hybridshard");
  EXPECT_TRUE(env->store_hosted_elsewhere);
  EXPECT_EQ(env->events_address, "127.0.0.1:4000");
  EXPECT_EQ(env->master_addr, "127.0.0.1");
  EXPECT_EQ(env->master_port, 29500);
}

// `hybridshard run` hands its ranks a file store: no TCP store at all, and the file names the run.
TEST_F(RankEnvironmentTest, our_launchers_file_store_is_where_its_ranks_meet) {
  set({{"RANK", "0"},
       {"WORLD_SIZE", "4"},
       {"HYBRIDSHARD_LAUNCHER", "1"},
       {"HYBRIDSHARD_STORE_FILE", "/tmp/hybridshard-store-abc/store"}});
  const auto env = rank_environment_from_env();
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->store_file, "/tmp/hybridshard-store-abc/store");
  EXPECT_EQ(env->job_instance, "store:/tmp/hybridshard-store-abc/store");
  const StoreAddress address = store_address_of(*env);
  EXPECT_EQ(address.file, "/tmp/hybridshard-store-abc/store");
  EXPECT_FALSE(address.host_it) << "rank 0 hosts no TCP store next to the file";

  // Under another launcher the variable is a mistake, not a silent change of rendezvous.
  ::unsetenv("HYBRIDSHARD_LAUNCHER");
  EXPECT_NE(error_of().find("HYBRIDSHARD_STORE_FILE is set but this rank was started by torchrun"), std::string::npos)
      << error_of();
  ::unsetenv("HYBRIDSHARD_STORE_FILE");
  EXPECT_TRUE(store_address_of(*rank_environment_from_env()).host_it) << "torchrun without an agent store: rank 0";
}

// The event stream's address is parsed strictly where it is read, naming the variable (was "error: stoi").
TEST_F(RankEnvironmentTest, a_malformed_event_stream_address_is_an_error_naming_the_variable) {
  for (const char* bad : {"127.0.0.1:99999999999", "256.0.0.0:4000", "::1:4000", "127.0.0.1"}) {
    set({{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"HYBRIDSHARD_LAUNCHER", "1"}, {"HYBRIDSHARD_EVENTS", bad}});
    try {
      rank_environment_from_env();
      ADD_FAILURE() << bad << " accepted";
    } catch (const core::ConfigError& error) {
      EXPECT_NE(std::string(error.what()).find(std::string("HYBRIDSHARD_EVENTS '") + bad + "'"), std::string::npos)
          << error.what();
    }
  }
  set({{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"HYBRIDSHARD_LAUNCHER", "1"}, {"HYBRIDSHARD_EVENTS", "[::1]:4000"}});
  EXPECT_EQ(rank_environment_from_env()->events_address, "[::1]:4000");
}

TEST_F(RankEnvironmentTest, slurm_and_mpirun) {
  set({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "1"}, {"MASTER_ADDR", "node1"}});
  auto env = rank_environment_from_env();
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->launcher, "slurm");
  EXPECT_EQ(env->rank, 3);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->master_addr, "node1");
  EXPECT_FALSE(env->store_hosted_elsewhere);

  // torchrun's variables win when both are there (torchrun started under srun).
  set({{"RANK", "0"}, {"WORLD_SIZE", "2"}});
  EXPECT_EQ(rank_environment_from_env()->launcher, "torchrun");

  for (const char* name : kVariables) ::unsetenv(name);
  set({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "3"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}});
  env = rank_environment_from_env();
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->launcher, "mpirun");
  EXPECT_EQ(env->rank, 2);
  EXPECT_EQ(env->world_size, 3);
}

TEST_F(RankEnvironmentTest, bad_values_are_errors_naming_the_variable) {
  set({{"RANK", "two"}, {"WORLD_SIZE", "4"}});
  EXPECT_NE(error_of().find("RANK='two' is not an integer"), std::string::npos) << error_of();
  set({{"RANK", "4"}});
  EXPECT_NE(error_of().find("rank 4 is outside world size 4 (launcher: torchrun)"), std::string::npos) << error_of();
  set({{"RANK", "1"}, {"WORLD_SIZE", "99999999999"}});
  EXPECT_NE(error_of().find("WORLD_SIZE='99999999999' is not an integer"), std::string::npos) << error_of();
  set({{"WORLD_SIZE", "4"}, {"LOCAL_RANK", "-1"}});
  EXPECT_NE(error_of().find("local rank -1 is negative"), std::string::npos) << error_of();
  set({{"LOCAL_RANK", "0"}, {"MASTER_PORT", "70000"}});
  EXPECT_NE(error_of().find("MASTER_PORT=70000 is not a port"), std::string::npos) << error_of();
  set({{"MASTER_PORT", "29500x"}});
  EXPECT_NE(error_of().find("MASTER_PORT='29500x' is not an integer"), std::string::npos) << error_of();
}

}  // namespace
}  // namespace hybridshard::service
