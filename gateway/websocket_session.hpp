#pragma once
// One WebSocket connection. Lives by shared_from_this() bound into every
// handler; runs only on its shard's I/O thread. Outgoing frames queue (bounded
// by bytes) with one write in flight; what queues meanwhile leaves as ONE frame
// (objects joined by '\n', a gather write of the shared buffers). The byte
// stream below (plain TCP or TLS) is a ws_transport: the request handling here
// does not know which.
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "gateway/auth.hpp"
#include "gateway/edge_limits.hpp"
#include "gateway/server_context.hpp"
#include "messages/types.hpp"

namespace chat {

using frame_ptr = std::shared_ptr<const std::string>;

// Token bucket: `rate` per second, up to `burst`.
class token_bucket {
 public:
  token_bucket(double rate, double burst) : rate_(rate), burst_(burst), tokens_(burst) {}
  bool take(std::chrono::steady_clock::time_point now);

 private:
  double rate_, burst_, tokens_;
  std::chrono::steady_clock::time_point last_{};
};

// A buffer sequence that points into a session's own vector of buffers. Beast
// copies the sequence it is given into each write operation: a vector would be
// copied (one allocation per frame), two pointers are not.
struct buffer_span {
  using value_type = boost::asio::const_buffer;
  using const_iterator = const boost::asio::const_buffer*;
  const_iterator first = nullptr;
  const_iterator last = nullptr;
  const_iterator begin() const { return first; }
  const_iterator end() const { return last; }
};

// What the edge hands a WebSocket session along with its stream.
struct conn_admission {
  address_lease connection;  // counts against the source address while open
  address_lease prehello;    // counts until hello succeeds
  std::string remote;        // for the logs: "ip:port", or "client via=proxy:port"
};

class ws_transport;  // websocket_session.cpp; made by start_websocket_session (ws_start.hpp)

class websocket_session : public std::enable_shared_from_this<websocket_session> {
 public:
  websocket_session(std::unique_ptr<ws_transport> transport, io_shard& shard, server_context& ctx,
                    conn_admission admission);
  ~websocket_session();

  void run(boost::beast::http::request<boost::beast::http::string_body> req);

  // Called on the I/O thread (posted by the gateway actor).
  void push(frame_ptr frame);
  void on_joined(joined_msg& msg);
  void on_deliver(const std::string& room, uint64_t seq, const frame_ptr& frame,
                  const std::string& skip_user);
  // The user's membership of `room` ended (part): stop receiving it.
  void on_parted(const std::string& room);
  // One node's my_rooms answer: the merged list goes out with the last one.
  void on_my_rooms(const my_rooms_msg& m);
  // The room's actor died (its node was lost): re-join at its new home.
  void on_room_lost(const std::string& room);
  // A moved room refused send `req_id`: true if it has an idempotency key and
  // is kept, to go again when the room is joined at its new home.
  bool keep_for_resend(const std::string& room, const std::string& req_id);
  // An ack (room set) or an error (room unknown) answered request `req_id`.
  void on_answered(const std::string& room, const std::string& req_id);
  // The room refused join `req_id` (private room, not a participant): the
  // connection does not wait for it any longer.
  void on_join_refused(const std::string& room, const std::string& req_id);
  // The cluster's view changed (a node down or back): re-register with the
  // user's home registry, move joins and rooms whose home moved.
  void on_placement_change();
  void close(uint16_t code, std::string reason);

  uint64_t id() const { return id_; }
  const std::string& user() const { return ident_.user; }
  void set_room_index(const std::string& room, size_t index);

 private:
  template <class Stream>
  friend class ws_transport_of;

  struct room_sub {
    caf::actor actor;          // set once joined
    bool pending = true;       // join sent, joined not yet back
    bool member = false;       // in the local fan-out list
    size_t index = 0;          // position in the registry's room vector
    std::vector<send_req> held;  // sends made while the join was pending
    // Sends handed to the room actor and not answered yet (oldest first): if
    // the actor is lost, nobody else would ever answer them. One with an
    // idempotency key is kept whole, to be sent again to the room's new home
    // (the key makes that safe); the others are answered `unavailable`.
    struct unanswered_send {
      std::string id;
      std::optional<send_req> again;
    };
    std::deque<unanswered_send> unanswered;
    std::chrono::steady_clock::time_point last_typing{};
    // The join in flight: where it went, its id, since when (bounded by
    // kJoinBound), and whether it is a re-join the client did not ask for.
    caf::actor join_dir;
    std::string join_id;
    std::chrono::steady_clock::time_point join_sent{};
    bool rejoin = false;
    bool join_recover = false;  // the join asks for recovery from last_seq in epoch
    // What this connection has seen of the room: the re-join's `since`.
    uint64_t last_seq = 0;
    std::string epoch;
  };

  void on_accept(boost::beast::error_code ec);
  void do_read();
  void on_read(boost::beast::error_code ec, std::size_t bytes);
  void do_write();
  void on_write(boost::beast::error_code ec, std::size_t bytes);
  void do_close();
  void cleanup(const std::string& why);

  void handle(std::string_view text);
  void handle_hello(client_req& req);
  void handle_refresh(client_req& req);
  void handle_join(client_req& req);
  void handle_leave(client_req& req);
  void handle_send(client_req& req);
  void handle_dm(client_req& req);
  // edit, delete, react (protocol v2): through the room like a send.
  void handle_change(client_req& req);
  // read, part: to the room (joined or not); my_rooms: to every node.
  void handle_membership(client_req& req);
  void handle_my_rooms(client_req& req);
  caf::actor room_or_directory(const std::string& room, const std::string& id);
  send_req make_send(client_req& req, event_kind kind);
  void handle_room_query(client_req& req);
  void handle_typing(client_req& req);

  void send_frame(std::string frame);
  void send_error(const std::string& id, const char* code, const std::string& message);
  // A send to the joined room's actor, remembered until it is answered.
  void hand_over(room_sub& sub, send_req s);
  void send_to_room(room_sub& sub, send_req s);
  bool may_access(const std::string& room) const;
  void arm_expiry();
  void unsubscribe(const std::string& room, room_sub& sub);
  conn_ref self_ref() const;
  // The directory on the room's home node; null (and an `unavailable` error
  // sent) when that node is not reachable.
  caf::actor directory_for(const std::string& room, const std::string& req_id);
  // Sends the join for `sub` to `dir` (a re-join recovers from sub.last_seq).
  void send_join(const std::string& room, room_sub& sub, const caf::actor& dir, bool has_since,
                 uint64_t since, const std::string& epoch);
  // Re-joins a joined room at its current home, or fails it as lost.
  void rejoin(const std::string& room);
  // Answers a join (and the sends held behind it) that cannot complete.
  void fail_join(const std::string& room, const char* why);
  // Today's answer to a lost room: an `unavailable` room error, the room dropped.
  void on_room_gone(const std::string& room);
  void arm_join_timer();
  void on_join_timer();

  // The WebSocket over a plain or a TLS socket (no tcp_stream: Beast's own
  // timeouts, handshake and idle ping, cover it, and tcp_stream's timer and
  // bookkeeping cost memory and time on every write).
  std::unique_ptr<ws_transport> ws_;
  io_shard& shard_;
  server_context& ctx_;
  uint64_t id_;
  std::string session_id_;
  std::string remote_;
  address_lease conn_lease_;      // released when the session (and its socket) goes
  address_lease prehello_lease_;  // released by hello or cleanup
  boost::beast::flat_buffer buffer_;

  std::vector<frame_ptr> queue_;     // waiting for the write in flight
  std::vector<frame_ptr> inflight_;  // being written
  std::vector<boost::asio::const_buffer> bufs_;  // what buffer_span below points into
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool closing_ = false;
  bool close_sent_ = false;
  bool cleaned_ = false;
  uint16_t close_code_ = 1000;
  std::string close_reason_;

  bool authed_ = false;
  caf::actor users_;  // the registry on this user's home node
  int64_t hello_ms_ = 0;  // when hello succeeded: the registry's age of this connection
  identity ident_;
  std::unordered_map<std::string, room_sub> rooms_;
  std::unordered_map<std::string, uint64_t> dm_seen_;  // dm room -> last seq delivered
  // my_rooms asked of several nodes: answers still due and the rows so far.
  struct my_rooms_wait {
    size_t due = 0;
    std::vector<user_room> rooms;
  };
  std::unordered_map<std::string, my_rooms_wait> my_rooms_;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> dm_typing_;
  token_bucket msg_bucket_;
  token_bucket req_bucket_;
  token_bucket typing_bucket_;  // typing and ping: their own, cheaper budgets
  token_bucket ping_bucket_;
  // One timer for the one deadline a session has at a time: hello (until
  // authenticated), token expiry (while open), closing handshake (while
  // closing). Each handler checks that its phase still holds, so a stale
  // completion of an earlier phase does nothing. Saves two timers' memory on
  // every idle connection.
  boost::asio::steady_timer timer_;
  // Only while a join is pending (most connections never have one for long).
  std::unique_ptr<boost::asio::steady_timer> join_timer_;
  std::chrono::steady_clock::time_point opened_;
};

}  // namespace chat
