// Cluster placement and routing across three simulated nodes, with CAF 0.17's
// io test DSL (caf/test/io_dsl.hpp): each planet (earth, mars, jupiter) is a
// whole actor_system on the test coordinator plus a test_multiplexer, so BASP
// runs for real (handshakes, serialization of every chat type, proxies,
// down_msg on connection loss) without sockets, threads or sleeps.
//
// What is real and what is simulated:
//  - every planet runs the production store (memory backend), user registry,
//    directory (and its rooms) and node actor, published on port 4242;
//  - earth runs the production cluster_manager: it dials mars and jupiter
//    through the middleman actor (connect_atom) exactly as in chatd, and fills
//    earth's cluster_routes. Mars and jupiter run no cluster manager: a full
//    mesh would dial both ways and need six prepared connections for no extra
//    coverage of earth's view;
//  - gateways are recorder actors (tests/support/chat_fakes.hpp);
//  - a lost connection is an io_failure on both ends of the simulated TCP
//    stream: what a reset socket reports to the BASP broker.
// We do not use the fixture's exec_all(): it fires every pending timer until
// the system is quiet, and the cluster manager's redial timer re-arms itself
// while a peer is down, so it would never return. run_net() delivers messages
// and bytes only; a test fires a timer by advancing the planet's clock.
// clang-format off
#include "tests/support/caf_gtest.hpp"  // first: bridges caf/test/dsl.hpp to gtest
#include "caf/test/io_dsl.hpp"          // after it: uses the bridged macros
// clang-format on

#include <algorithm>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "actors/cluster/routes.hpp"
#include "actors/cluster/manager.hpp"
#include "actors/directory.hpp"
#include "actors/store/store.hpp"
#include "actors/user_registry.hpp"
#include "tests/support/chat_fakes.hpp"

using namespace caf;
using namespace chat;
using namespace chat_test;

namespace {

struct node_config : test_config {
  node_config() { load<io::middleman>(); }
};

using planet = test_node_fixture<test_coordinator_fixture<node_config>>;

constexpr uint16_t remoting_port = 4242;
const std::vector<std::string> node_names{"earth", "mars", "jupiter"};
constexpr size_t earth_ix = 0, mars_ix = 1, jupiter_ix = 2;

// The first "room-N" whose rendezvous home is node `home`.
std::string room_homed_on(size_t home) {
  for (int i = 0;; ++i) {
    auto name = "room-" + std::to_string(i);
    if (rendezvous_home(name, node_names) == home) return name;
  }
}

cluster_config three_nodes() {
  cluster_config cfg;
  for (size_t i = 0; i < node_names.size(); ++i)
    cfg.nodes.push_back(
        {node_names[i], "127.0.0.1:" + std::to_string(8081 + i), node_names[i], remoting_port});
  return cfg;
}

// What one chatd node runs (gateway/server.cpp), minus the HTTP side.
struct chat_node {
  std::shared_ptr<cluster_routes> routes;
  store_actor store;
  actor users;
  actor directory;
  actor node;
  actor gw;  // a recorder standing in for this node's WebSocket gateway
};

struct ClusterDslTest : ::testing::Test, test_network_fixture_base<planet> {
  planet earth;
  planet mars;
  planet jupiter;
  std::vector<planet*> planets;
  chat_node nodes[3];
  io::connection_handle mars_server_hdl, mars_client_hdl;  // the earth <-> mars stream
  io::accept_handle mars_acceptor;
  actor manager;  // earth's cluster_manager

  ClusterDslTest()
      : test_network_fixture_base<planet>({&earth, &mars, &jupiter}),
        earth([this] { run_net(); }),
        mars([this] { run_net(); }),
        jupiter([this] { run_net(); }),
        planets{&earth, &mars, &jupiter} {
    run_net();
    // Connections must be prepared before publish: the test multiplexer hands
    // the listening port the acceptor named here.
    mars_acceptor = next_accept_handle();
    std::tie(mars_server_hdl, mars_client_hdl) =
        prepare_connection(mars, earth, "mars", remoting_port, mars_acceptor);
    prepare_connection(jupiter, earth, "jupiter", remoting_port);
    earth.mpx.provide_acceptor(remoting_port, next_accept_handle());  // nobody dials earth
    for (size_t i = 0; i < planets.size(); ++i) start_node(i);
    run_net();
  }

  void TearDown() override {
    for (size_t i = 0; i < planets.size(); ++i) {
      auto& n = nodes[i];
      anon_send(n.directory, close_atom_v);  // stops its rooms too
      for (auto& a : {n.users, n.node, n.gw}) anon_send_exit(a, exit_reason::kill);
      anon_send_exit(n.store, exit_reason::kill);
    }
    for (auto& a : extra_) anon_send_exit(a, exit_reason::kill);
    if (manager) anon_send_exit(manager, exit_reason::kill);
    run_net();
  }

  // Delivers every message and every byte on every planet until nothing moves.
  // Fires no timer (see the top of the file). Bounded, so a livelock fails the
  // test instead of hanging it.
  void run_net() {
    // Runnables before reads: read_data() first flushes pending runnables (the
    // BASP broker's writes) and then reports only whether it read something, so
    // checking reads first could end the loop with bytes still in flight.
    auto advance = [](planet* p) {
      return p->sched.try_run_once() || p->mpx.try_exec_runnable() || p->mpx.read_data() ||
             p->mpx.try_accept_connection();
    };
    auto all = {&earth, &mars, &jupiter};
    for (size_t steps = 0; std::any_of(all.begin(), all.end(), advance);)
      if (++steps > 100000) {
        ADD_FAILURE() << "run_net: still busy after 100000 steps";
        return;
      }
  }

  void start_node(size_t i) {
    auto& p = *planets[i];
    auto& n = nodes[i];
    n.routes = std::make_shared<cluster_routes>(node_names, i);
    n.store = spawn_store(p.sys, make_memory_backend(1000), store_config{}, /*detached=*/false);
    n.users = p.sys.spawn(user_registry_impl, size_t{10}, registry_deps{});
    n.directory = p.sys.spawn(directory_impl, room_deps{n.store, nullptr, n.users, {}, n.routes, {}});
    n.routes->set_node(i, n.directory, n.users);
    n.node = p.sys.spawn(node_impl, n.directory, n.users, node_names[i], cluster_digest(three_nodes()));
    n.gw = p.sys.spawn(recorder_impl, node_names[i] + "-gw");
    // Not the fixture's publish(): it throws on failure, and a throw from the
    // constructor would leave live actors behind and hang ~actor_system.
    p.sched.inline_next_enqueue();
    auto port = p.mm.publish(n.node, remoting_port);
    EXPECT_TRUE(port && *port == remoting_port) << node_names[i] << ": publish failed";
  }

  // Earth's cluster manager: dials mars and jupiter through the middleman.
  void start_manager() {
    manager =
        earth.sys.spawn(cluster_manager_impl, three_nodes(), earth_ix, nodes[earth_ix].routes);
    run_net();
  }

  actor recorder(planet& p, const std::string& label) {
    auto r = p.sys.spawn(recorder_impl, label);
    extra_.push_back(r);
    return r;
  }

  cluster_routes& earth_routes() { return *nodes[earth_ix].routes; }

  // Starts earth's manager, picks a room homed on mars and sends alice's join
  // (earth's gateway, conn 1) to mars's directory as earth resolved it: the
  // join_req, with earth's gateway handle inside, crosses the simulated network.
  std::pair<std::string, actor> alice_joins_a_mars_room() {
    start_manager();
    auto room = room_homed_on(mars_ix);
    auto dir = earth_routes().directory_for(room);
    EXPECT_TRUE(dir);
    if (dir)
      anon_send(dir, make_join(room, conn_ref{as_gw(nodes[earth_ix].gw), 1}, who("alice"), "\"j1\""));
    return {room, dir};
  }

  // The simulated TCP stream between earth and mars breaks: each BASP broker
  // sees connection_closed, as after a reset.
  void cut_earth_mars() {
    earth.mpx.impl_ptr(mars_client_hdl)->io_failure(&earth.mpx, io::network::operation::read);
    mars.mpx.impl_ptr(mars_server_hdl)->io_failure(&mars.mpx, io::network::operation::read);
    run_net();
  }

  // A fresh stream for the next dial from earth to mars (same listening port).
  void reconnect_earth_mars() {
    std::tie(mars_server_hdl, mars_client_hdl) =
        prepare_connection(mars, earth, "mars", remoting_port, mars_acceptor);
  }

  static member_info who(const std::string& user) {
    auto name = user;
    name[0] = static_cast<char>(name[0] - 'a' + 'A');
    return {user, name};
  }

 private:
  std::vector<actor> extra_;
};

TEST_F(ClusterDslTest, ManagerDialsPeersAndRoutesByRendezvous) {
  // Before dialling, earth only knows itself.
  EXPECT_FALSE(earth_routes().all_up());
  start_manager();
  ASSERT_TRUE(earth_routes().all_up());
  EXPECT_EQ(state_of<cluster_manager_state>(manager).peers.size(), 2u);
  for (size_t home : {earth_ix, mars_ix, jupiter_ix}) {
    auto room = room_homed_on(home);
    SCOPED_TRACE(room + " homed on " + node_names[home]);
    EXPECT_EQ(earth_routes().home_of(room), home);
    // A handle on the home node's own directory: a proxy for remote homes.
    auto dir = earth_routes().directory_for(room);
    ASSERT_TRUE(dir);
    EXPECT_EQ(dir.node(), planets[home]->sys.node());
    EXPECT_EQ(dir.id(), nodes[home].directory.id());
    // Same rule for users, whose registry lives on their home node.
    EXPECT_EQ(earth_routes().users_for(room).node(), planets[home]->sys.node());
  }
  // Every node computes the same preferred homes from the same file, with no
  // coordination (mars and jupiter here see only themselves up).
  auto room = room_homed_on(mars_ix);
  for (auto& n : nodes) EXPECT_EQ(n.routes->preferred_home_of(room), mars_ix);
}

TEST_F(ClusterDslTest, MemberOnEarthGetsMarsRoomMessagesInSeqOrder) {
  auto [room, mars_dir] = alice_joins_a_mars_room();
  ASSERT_TRUE(mars_dir);
  auto& earth_gw = nodes[earth_ix].gw;
  auto& mars_gw = nodes[mars_ix].gw;
  run_net();
  ASSERT_EQ(rec(earth_gw).joins.size(), 1u);
  auto& joined = rec(earth_gw).joins[0];
  EXPECT_EQ(joined.room, room);
  EXPECT_EQ(joined.room_actor.node(), mars.sys.node()) << "the room lives on its home node";
  EXPECT_EQ(state_of<directory_state>(nodes[mars_ix].directory).rooms.count(room), 1u);
  EXPECT_EQ(state_of<directory_state>(nodes[earth_ix].directory).rooms.count(room), 0u);
  // Bob joins on mars and sends three messages into the room.
  anon_send(nodes[mars_ix].directory, make_join(room, conn_ref{as_gw(mars_gw), 7}, who("bob"), "\"j2\""));
  for (int i = 1; i <= 3; ++i)
    anon_send(nodes[mars_ix].directory,
              make_send(room, conn_ref{as_gw(mars_gw), 7}, who("bob"), "\"s" + std::to_string(i) + "\"",
                        "hello " + std::to_string(i)));
  run_net();
  EXPECT_EQ(ack_seqs(mars_gw, 7), iota_seqs(1, 3));
  EXPECT_EQ(delivered_seqs(earth_gw), iota_seqs(1, 3));
  auto msgs = delivered(earth_gw, "message");
  ASSERT_EQ(msgs.size(), 3u);
  for (size_t i = 0; i < msgs.size(); ++i) {
    EXPECT_EQ(msgs[i]["text"], "hello " + std::to_string(i + 1));
    EXPECT_EQ(msgs[i]["from"], "bob");
  }
  // Alice's joined_msg reached earth before any stored message did. (Only her
  // own member_joined, which skips her, may precede it.)
  auto& log = rec(earth_gw).log;
  auto joined_at = std::find(log.begin(), log.end(), "joined_msg") - log.begin();
  size_t delivers_before =
      static_cast<size_t>(std::count(log.begin(), log.begin() + joined_at, "deliver"));
  for (size_t i = 0; i < delivers_before; ++i) {
    EXPECT_EQ(rec(earth_gw).delivers[i].seq, 0u);
    EXPECT_EQ(rec(earth_gw).delivers[i].skip_user, "alice");
  }
  // Alice answers from earth through the same route: the next seq, seen on mars.
  anon_send(mars_dir, make_send(room, conn_ref{as_gw(earth_gw), 1}, who("alice"), "\"s4\"", "hi bob"));
  run_net();
  EXPECT_EQ(ack_seqs(earth_gw, 1), std::vector<uint64_t>{4});
  EXPECT_EQ(delivered_seqs(mars_gw), iota_seqs(1, 4));
  EXPECT_EQ(delivered_seqs(earth_gw), iota_seqs(1, 4));
}

TEST_F(ClusterDslTest, KilledNodeActorMovesItsRoomsToTheirNextChoice) {
  start_manager();
  auto room = room_homed_on(mars_ix);
  auto other = room_homed_on(jupiter_ix);
  ASSERT_TRUE(earth_routes().directory_for(room));
  auto other_dir = earth_routes().directory_for(other);
  auto version = earth_routes().version();
  int changes = 0;
  earth_routes().on_change([&changes] { ++changes; });
  anon_send_exit(nodes[mars_ix].node, exit_reason::kill);
  run_net();
  // The manager got the down_msg over the network and took mars out of the
  // placement: mars's rooms and users go to their next rendezvous choice.
  auto next = rendezvous_home(room, node_names, {true, false, true});
  ASSERT_NE(next, mars_ix);
  EXPECT_EQ(earth_routes().home_of(room), next);
  EXPECT_EQ(earth_routes().preferred_home_of(room), mars_ix);
  auto moved = earth_routes().directory_for(room);
  ASSERT_TRUE(moved);
  EXPECT_EQ(moved.id(), nodes[next].directory.id());
  EXPECT_EQ(moved.node(), planets[next]->sys.node());
  EXPECT_EQ(earth_routes().users_for(room).node(), planets[next]->sys.node());
  EXPECT_EQ(earth_routes().directory_for(other), other_dir) << "losing a node moves nothing else";
  EXPECT_GT(earth_routes().version(), version);
  EXPECT_EQ(changes, 1) << "the listeners hear of the change once";
  EXPECT_EQ(earth_routes().up_count(), 2u);
  EXPECT_EQ(state_of<cluster_manager_state>(manager).peers.size(), 1u);
  auto status = earth_routes().status();
  ASSERT_EQ(status.size(), 3u);
  EXPECT_TRUE(status[earth_ix].up && status[earth_ix].self);
  EXPECT_FALSE(status[mars_ix].up);
  EXPECT_TRUE(status[jupiter_ix].up);
  // The redial timer fires, finds no way to mars and re-arms: still down, no spin.
  earth.sched.clock().advance_time(state_of<cluster_manager_state>(manager).redial);
  run_net();
  EXPECT_EQ(earth_routes().directory_for(room).id(), nodes[next].directory.id());
  EXPECT_EQ(state_of<cluster_manager_state>(manager).peers.size(), 1u);
}

TEST_F(ClusterDslTest, LostConnectionGivesDownAndRedialRestoresTheRoute) {
  // Alice (earth) and bob (mars) are members; one message gets through.
  auto [room, mars_dir] = alice_joins_a_mars_room();
  ASSERT_TRUE(mars_dir);
  auto& earth_gw = nodes[earth_ix].gw;
  auto& mars_gw = nodes[mars_ix].gw;
  anon_send(nodes[mars_ix].directory, make_join(room, conn_ref{as_gw(mars_gw), 7}, who("bob"), "\"j2\""));
  run_net();
  anon_send(nodes[mars_ix].directory,
            make_send(room, conn_ref{as_gw(mars_gw), 7}, who("bob"), "\"s1\"", "one"));
  run_net();
  ASSERT_EQ(delivered_seqs(earth_gw), iota_seqs(1, 1));
  // A watcher on earth monitors mars's directory, as any earth actor holding a
  // remote handle would.
  auto watcher = recorder(earth, "watcher");
  anon_send(watcher, watch_atom_v, mars_dir);
  run_net();

  cut_earth_mars();
  ASSERT_EQ(rec(watcher).downs.size(), 1u);
  EXPECT_EQ(rec(watcher).downs[0].reason, make_error(exit_reason::remote_link_unreachable));
  // While mars is down its room is homed on its next choice.
  auto next = rendezvous_home(room, node_names, {true, false, true});
  EXPECT_EQ(earth_routes().directory_for(room).id(), nodes[next].directory.id());
  EXPECT_TRUE(earth_routes().directory_for(room_homed_on(jupiter_ix)));
  EXPECT_EQ(state_of<cluster_manager_state>(manager).peers.size(), 1u);
  // On mars, earth's gateway is unreachable too: the room dropped alice.
  auto room_actor = state_of<directory_state>(nodes[mars_ix].directory).rooms.at(room).room;
  EXPECT_EQ(state_of<room_state>(room_actor).members.conn_count, 1u);
  // Messages sent meanwhile reach only mars's members.
  anon_send(nodes[mars_ix].directory,
            make_send(room, conn_ref{as_gw(mars_gw), 7}, who("bob"), "\"s2\"", "two"));
  run_net();
  EXPECT_EQ(delivered_seqs(mars_gw), iota_seqs(1, 2));
  EXPECT_EQ(delivered_seqs(earth_gw), iota_seqs(1, 1));

  // The network comes back; the manager's redial timer (1 s) fires and the
  // room moves back to mars, its preferred home.
  reconnect_earth_mars();
  earth.sched.clock().advance_time(state_of<cluster_manager_state>(manager).redial);
  run_net();
  ASSERT_TRUE(earth_routes().all_up());
  auto again = earth_routes().directory_for(room);
  ASSERT_TRUE(again);
  EXPECT_EQ(again.id(), nodes[mars_ix].directory.id());
  // Alice rejoins with recovery from seq 1: the join replays seq 2 ahead of its
  // joined frame, and live messages follow.
  auto epoch = state_of<room_state>(room_actor).epoch;
  anon_send(again, make_join(room, conn_ref{as_gw(earth_gw), 1}, who("alice"), "\"j3\"", true, 1, epoch));
  run_net();
  ASSERT_EQ(rec(earth_gw).joins.size(), 2u);
  auto rejoined = frames_of(rec(earth_gw).joins[1]);
  ASSERT_EQ(rejoined.size(), 2u);
  EXPECT_EQ(parse(rejoined[0])["seq"], 2);
  EXPECT_EQ(type_of(rejoined[1]), "joined");
  anon_send(nodes[mars_ix].directory,
            make_send(room, conn_ref{as_gw(mars_gw), 7}, who("bob"), "\"s3\"", "three"));
  run_net();
  EXPECT_EQ(delivered_seqs(earth_gw), (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(delivered_seqs(mars_gw), iota_seqs(1, 3));
}

}  // namespace

namespace {

struct ClusterSanityTest : ClusterDslTest {
  void start_manager_with(cluster_config cfg) {
    manager = earth.sys.spawn(cluster_manager_impl, std::move(cfg), earth_ix, nodes[earth_ix].routes);
    run_net();
  }
};

}  // namespace

TEST_F(ClusterSanityTest, PeerWithAnotherClusterFileIsRefused) {
  // Earth's file lists jupiter's HTTP address differently from everyone else's.
  auto cfg = three_nodes();
  cfg.nodes[jupiter_ix].listen = "127.0.0.1:9999";
  start_manager_with(cfg);
  auto status = earth_routes().status();
  for (size_t i : {mars_ix, jupiter_ix}) {
    EXPECT_FALSE(status[i].up) << node_names[i];
    EXPECT_NE(status[i].refused.find("cluster file differs"), std::string::npos) << status[i].refused;
  }
  EXPECT_TRUE(state_of<cluster_manager_state>(manager).peers.empty());
  EXPECT_EQ(earth_routes().up_count(), 1u);
}

TEST_F(ClusterSanityTest, PeerWhoseNameDoesNotMatchItsAddressIsRefused) {
  // Earth's file has mars and jupiter at each other's addresses.
  auto cfg = three_nodes();
  std::swap(cfg.nodes[mars_ix].remote_host, cfg.nodes[jupiter_ix].remote_host);
  start_manager_with(cfg);
  auto status = earth_routes().status();
  EXPECT_FALSE(status[mars_ix].up);
  EXPECT_NE(status[mars_ix].refused.find("is named jupiter, not mars"), std::string::npos)
      << status[mars_ix].refused;
  EXPECT_NE(status[jupiter_ix].refused.find("is named mars, not jupiter"), std::string::npos)
      << status[jupiter_ix].refused;
  EXPECT_TRUE(state_of<cluster_manager_state>(manager).peers.empty());
}
