// chat-cli against a real chatd: pipes in, JSON and text out, exit codes.
#include <gtest/gtest.h>

#include <regex>

#include "gateway/auth.hpp"
#include "messages/clock.hpp"
#include "tests/integration/chatd_process.hpp"
#include "tests/integration/ws_client.hpp"

using namespace chat_test;

namespace {

const std::string kSecret = "cli-test-secret-0123456789abcdef";

struct Cli : ::testing::Test {
  chatd_process server{{"--allow-anonymous", "--jwt-secret", kSecret, "--store", "memory",
                        "--log-level", "warn", "--rate", "1000", "--burst", "1000", "--api-key",
                        "cli-test-key"}};
  void SetUp() override { ASSERT_TRUE(server.ok()) << server.log(); }

  std::string url() const { return "ws://127.0.0.1:" + std::to_string(server.port()) + "/ws"; }
  std::vector<std::string> cli(std::vector<std::string> args) {
    args.insert(args.begin(), {CHAT_CLI_PATH, "--url", url()});
    return args;
  }
  void hello(ws_client& c, const std::string& name) {
    auto w = c.hello_name(server.port(), name);
    ASSERT_TRUE(is_type(w, "welcome")) << w;
  }
  void join(ws_client& c, const std::string& room) {
    auto j = c.request({{"type", "join"}, {"room", room}}, 3);
    ASSERT_TRUE(j && is_type(*j, "joined")) << (j ? *j : json());
  }
  std::optional<json> next_message(ws_client& c) {
    return c.recv_until([](const json& x) { return is_type(x, "message"); });
  }
  // Reads --json lines until one has this type.
  std::optional<json> line_of_type(child_process& p, const char* type) {
    while (auto line = p.read_line()) {
      auto j = json::parse(*line, nullptr, false);
      EXPECT_TRUE(j.is_object()) << *line;
      if (is_type(j, type)) return j;
    }
    return std::nullopt;
  }
};

}  // namespace

TEST_F(Cli, SendOnlyPipesLinesIntoARoom) {
  ws_client alice;
  hello(alice, "alice");
  join(alice, "general");
  child_process p{cli({"--name", "bot", "--room", "general", "--send-only"})};
  ASSERT_TRUE(p.write_stdin("hello from the pipe 👋\nsecond line\n"));
  p.close_stdin();
  EXPECT_EQ(p.wait(), 0) << p.err();
  for (auto* text : {"hello from the pipe 👋", "second line"}) {
    auto m = next_message(alice);
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)["from"], "~bot");  // anonymous beside tokens
    EXPECT_EQ((*m)["room"], "general");
    EXPECT_EQ((*m)["text"], text);
  }
  EXPECT_TRUE(p.rest_lines().empty());  // --send-only prints nothing
}

TEST_F(Cli, JsonPrintsEveryObjectAsReceived) {
  child_process p{cli({"--name", "watcher", "--room", "general", "--json"})};
  auto welcome = line_of_type(p, "welcome");
  ASSERT_TRUE(welcome) << p.err();
  EXPECT_EQ((*welcome)["user"], "~watcher");  // anonymous beside tokens: its own namespace
  ASSERT_TRUE(line_of_type(p, "joined")) << p.err();
  ws_client alice;
  hello(alice, "alice");
  join(alice, "general");
  auto ack =
      alice.request({{"type", "send"}, {"room", "general"}, {"text", "hi \"there\" <b>"}}, 5);
  ASSERT_TRUE(ack && is_type(*ack, "ack"));
  auto sent = next_message(alice);
  ASSERT_TRUE(sent);
  auto m = line_of_type(p, "message");
  ASSERT_TRUE(m) << p.err();
  EXPECT_EQ(*m, *sent);
  EXPECT_EQ((*m)["text"], "hi \"there\" <b>");
  p.close_stdin();
  EXPECT_EQ(p.wait(), 0) << p.err();
}

TEST_F(Cli, HumanOutputShowsTimeRoomNameText) {
  ws_client alice;
  hello(alice, "alice");
  join(alice, "general");
  child_process p{cli({"--name", "watcher", "--room", "general"})};
  // Once alice sees it join, the CLI is a member.
  ASSERT_TRUE(alice.recv_until([](const json& x) { return is_type(x, "member_joined"); }))
      << p.err();
  alice.send({{"type", "send"}, {"room", "general"}, {"text", "good\x1b[31m morning"}});
  auto line = p.read_line();
  ASSERT_TRUE(line) << p.err();
  // Time, room, name, text; the escape sequence is defused.
  EXPECT_TRUE(std::regex_match(
      *line, std::regex(R"(\[\d\d:\d\d:\d\d\] \[general\] alice: good\?\[31m morning  #1)")))
      << *line;
  p.write_stdin("/history\n");
  EXPECT_EQ(p.read_line(), "--- history of general");
  line = p.read_line();
  ASSERT_TRUE(line);
  EXPECT_NE(line->find("] [general] alice: good"), std::string::npos) << *line;
  p.close_stdin();
  EXPECT_EQ(p.wait(), 0) << p.err();
  EXPECT_NE(p.err().find("joined general"), std::string::npos) << p.err();
}

TEST_F(Cli, CommandsJoinDmAndSlashEscape) {
  ws_client alice;
  hello(alice, "alice");
  join(alice, "side");
  child_process p{cli({"--name", "bot", "--send-only"})};
  ASSERT_TRUE(
      p.write_stdin("/join side\n//not a command\n/dm ~alice psst\n/bogus\n/quit\nignored\n"));
  EXPECT_EQ(p.wait(), 0) << p.err();
  std::map<std::string, std::string> got;  // room -> text (two rooms: any order)
  for (int i = 0; i < 2; ++i) {
    auto m = next_message(alice);
    ASSERT_TRUE(m);
    EXPECT_EQ((*m)["from"], "~bot");
    got[(*m)["room"]] = (*m)["text"];
  }
  EXPECT_EQ(got["side"], "/not a command");
  EXPECT_EQ(got["dm:~alice:~bot"], "psst");
  EXPECT_FALSE(alice.recv_until([](const json& x) { return is_type(x, "message"); }, 300ms));
  EXPECT_NE(p.err().find("commands:"), std::string::npos) << p.err();
}

TEST_F(Cli, EditDeleteReactAndReply) {
  ws_client alice;
  hello(alice, "alice");
  join(alice, "general");
  auto ack = alice.request({{"type", "send"}, {"room", "general"}, {"text", "question"}}, 2);
  ASSERT_TRUE(ack && (*ack)["seq"] == 1);
  child_process p{cli({"--name", "bot", "--room", "general", "--send-only"})};
  ASSERT_TRUE(p.write_stdin("/reply 1 answer\n/react 1 👍\n/react 1 -👍\n/react 1 🎉\n"
                            "/edit 2 answer!\n/edit 1 not mine\n/delete x\n/quit\n"));
  EXPECT_NE(p.wait(), 0) << p.err();  // the refused edit and the bad /delete count as failed
  EXPECT_NE(p.err().find("forbidden"), std::string::npos) << p.err();
  EXPECT_NE(p.err().find("usage: /delete SEQ"), std::string::npos) << p.err();
  auto h = alice.request({{"type", "history"}, {"room", "general"}}, 3);
  ASSERT_TRUE(h);
  auto& msgs = (*h)["messages"];
  ASSERT_EQ(msgs.size(), 6u) << *h;
  EXPECT_EQ(msgs[1]["reply_to"], 1);
  EXPECT_EQ(msgs[1]["text"], "answer!");
  EXPECT_EQ(msgs[0]["reactions"], json::parse(R"([{"emoji":"🎉","count":1,"users":["~bot"]}])"));
  EXPECT_EQ(msgs[5]["type"], "message_edited");
}

TEST_F(Cli, SearchAndRoomsWithUnreadCounts) {
  ws_client alice;
  hello(alice, "alice");
  join(alice, "general");
  ASSERT_TRUE(alice.request({{"type", "send"}, {"room", "general"}, {"text", "deploy failed"}}, 2));
  ASSERT_TRUE(alice.request({{"type", "send"}, {"room", "general"}, {"text", "lunch?"}}, 3));
  child_process p{cli({"--name", "alice", "--room", "general"})};
  ASSERT_TRUE(p.write_stdin("/search deploy\n/rooms\n/quit\n"));
  EXPECT_EQ(p.wait(), 0) << p.err();
  std::string out;
  for (auto& l : p.rest_lines()) out += l + "\n";
  EXPECT_NE(out.find("--- 1 match in general"), std::string::npos) << out;
  EXPECT_NE(out.find("alice: deploy failed  #1"), std::string::npos) << out;
  EXPECT_NE(out.find("general  owner  0 unread"), std::string::npos) << out;
}

TEST_F(Cli, TokenLogin) {
  chat::auth_config a;
  a.hs256_secret = kSecret;
  chat::token_spec spec;
  spec.user = "svc-1";
  spec.name = "Service One";
  std::string err;
  auto token = chat::mint_token(a, spec, chat::now_ms() / 1000, err);
  ASSERT_FALSE(token.empty()) << err;
  ws_client alice;
  hello(alice, "alice");
  join(alice, "general");
  child_process p{cli({"--token", token, "--room", "general", "--send-only"})};
  p.write_stdin("with a token\n");
  p.close_stdin();
  EXPECT_EQ(p.wait(), 0) << p.err();
  auto m = next_message(alice);
  ASSERT_TRUE(m);
  EXPECT_EQ((*m)["from"], "svc-1");
  EXPECT_EQ((*m)["name"], "Service One");
}

TEST_F(Cli, BadTokenExits1) {
  child_process p{cli({"--token", "not.a.jwt", "--room", "general"})};
  EXPECT_EQ(p.wait(), 1);
  EXPECT_NE(p.err().find("unauthorized"), std::string::npos) << p.err();
}

TEST_F(Cli, MessageNotStoredExits1) {
  child_process p{cli({"--name", "bot", "--room", "general", "--send-only"})};
  p.write_stdin(std::string(5000, 'x') + "\n");
  p.close_stdin();
  EXPECT_EQ(p.wait(), 1);
  EXPECT_NE(p.err().find("too_large"), std::string::npos) << p.err();
}

TEST_F(Cli, ForbiddenJoinExits1) {
  child_process p{cli({"--name", "bot", "--room", "dm:x:y", "--send-only"})};
  p.close_stdin();
  EXPECT_EQ(p.wait(), 1);
  EXPECT_NE(p.err().find("cannot join"), std::string::npos) << p.err();
}

TEST_F(Cli, ClosedByTheServerExits1) {
  child_process p{cli({"--name", "victim", "--room", "general", "--json"})};
  ASSERT_TRUE(line_of_type(p, "joined")) << p.err();
  std::string body;
  EXPECT_EQ(http_request(server.port(), "POST", "/api/users/~victim/disconnect",
                         {{"Authorization", "Bearer cli-test-key"}}, R"({"reason":"bye"})", body),
            200)
      << body;
  EXPECT_EQ(p.wait(), 1);
  EXPECT_NE(p.err().find("4003 bye"), std::string::npos) << p.err();
}

TEST(CliUsage, ExitCodes) {
  auto run = [](std::vector<std::string> args) {
    args.insert(args.begin(), CHAT_CLI_PATH);
    child_process p{args};
    p.close_stdin();
    int rc = p.wait();
    return std::make_pair(rc, p.err());
  };
  EXPECT_EQ(run({}).first, 2);                               // neither --token nor --name
  EXPECT_EQ(run({"--name", "a", "--token", "t"}).first, 2);  // both
  EXPECT_EQ(run({"--name", "a", "--url", "http://127.0.0.1:1/"}).first, 2);
  EXPECT_EQ(run({"--name", "a", "--url", "wss://127.0.0.1:1/ws"}).first, 2);
  EXPECT_EQ(run({"--name", "a", "--no-such-flag"}).first, 2);
  EXPECT_EQ(run({"--help"}).first, 0);
  auto refused = run({"--name", "a", "--url", "ws://127.0.0.1:1/ws"});
  EXPECT_EQ(refused.first, 1);
  EXPECT_NE(refused.second.find("cannot connect"), std::string::npos) << refused.second;
}

TEST(CliRate, LinesKeepTheirOrderUnderTheRateLimit) {
  chatd_process server{{"--allow-anonymous", "--store", "memory", "--log-level", "warn", "--rate",
                        "10", "--burst", "5"}};
  ASSERT_TRUE(server.ok()) << server.log();
  ws_client alice;
  auto w = alice.hello_name(server.port(), "alice");
  ASSERT_TRUE(is_type(w, "welcome")) << w;
  ASSERT_TRUE(alice.request({{"type", "join"}, {"room", "general"}}, 3));
  child_process p{{CHAT_CLI_PATH, "--url",
                   "ws://127.0.0.1:" + std::to_string(server.port()) + "/ws", "--name", "bot",
                   "--room", "general", "--send-only"}};
  std::string lines;
  for (int i = 1; i <= 15; ++i) lines += "line " + std::to_string(i) + "\n";
  p.write_stdin(lines);
  p.close_stdin();
  EXPECT_EQ(p.wait(std::chrono::seconds(20)), 0) << p.err();  // rate_limited, retried, all stored
  for (int i = 1; i <= 15; ++i) {
    auto m = alice.recv_until([](const json& x) { return is_type(x, "message"); });
    ASSERT_TRUE(m) << i;
    EXPECT_EQ((*m)["text"], "line " + std::to_string(i));
    EXPECT_EQ((*m)["seq"], i);
  }
}

TEST_F(Cli, OwnerSetsTheTopicAndKicks) {
  ws_client alice, bob;
  hello(alice, "alice");
  hello(bob, "bob");
  join(alice, "general");  // the room's creator: its owner
  join(bob, "general");
  child_process p{cli({"--name", "alice", "--room", "general"})};
  // /history after the kick: its reply comes after the kick's event (which
  // may also print live, or not: the client may quit on the last ack first).
  ASSERT_TRUE(p.write_stdin("/topic Weekly sync\n/kick ~bob spam\n/history\n/role\n/quit\n"));
  EXPECT_NE(p.wait(), 0) << p.err();  // the bad /role counts as failed
  EXPECT_NE(p.err().find("usage: /role USER ROLE"), std::string::npos) << p.err();
  std::string out;
  for (auto& l : p.rest_lines()) out += l + "\n";
  EXPECT_NE(out.find("#1 * ~alice changed the settings: topic \"Weekly sync\""), std::string::npos)
      << out;
  EXPECT_NE(out.find("#2 * ~alice kicked ~bob (spam)"), std::string::npos) << out;
  auto kicked = bob.recv_until([](const json& x) { return is_type(x, "kicked"); });
  ASSERT_TRUE(kicked);
  EXPECT_EQ((*kicked)["reason"], "spam");
}
