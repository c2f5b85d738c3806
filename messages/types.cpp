#include "messages/types.hpp"

namespace chat {

caf::error make_chat_error(errc code, std::string message) {
  return caf::error{static_cast<uint8_t>(code), chat_error_category,
                    caf::make_message(std::move(message))};
}

errc errc_of(const caf::error& err, std::string* message) {
  if (err.category() == chat_error_category && err.code() < errc_count) {
    if (message) {
      auto& ctx = err.context();
      *message = ctx.match_elements<std::string>() ? ctx.get_as<std::string>(0) : std::string{};
    }
    return static_cast<errc>(err.code());
  }
  // A request that timed out, or whose receiver (or its node) is gone.
  if (message) *message = "";
  if (err == caf::sec::request_timeout) return errc::timeout;
  if (err.category() == caf::atom("system")) return errc::unavailable;
  return errc::internal;
}

const char* to_string(store_errc x) {
  switch (x) {
    case store_errc::failed:
      return "failed";
    case store_errc::fenced:
      return "fenced";
  }
  return "unknown";
}

caf::error make_error(store_errc x, std::string what) {
  return {static_cast<uint8_t>(x), store_error_category, caf::make_message(std::move(what))};
}

void register_message_types(caf::actor_system_config& cfg) {
  // Renders a store error as "store: fenced (what)" in logs instead of a code.
  cfg.add_error_category(
      store_error_category, [](uint8_t code, caf::atom_value, const caf::message& ctx) {
        auto out = std::string{"store: "} + to_string(static_cast<store_errc>(code));
        if (ctx.match_elements<std::string>()) out += " (" + ctx.get_as<std::string>(0) + ")";
        return out;
      });
  cfg.add_message_type<conn_ref>("chat::conn_ref");
  cfg.add_message_type<member_info>("chat::member_info");
  cfg.add_message_type<reaction_set>("chat::reaction_set");
  cfg.add_message_type<membership>("chat::membership");
  cfg.add_message_type<read_req>("chat::read_req");
  cfg.add_message_type<room_settings>("chat::room_settings");
  cfg.add_message_type<restriction>("chat::restriction");
  cfg.add_message_type<user_ban>("chat::user_ban");
  cfg.add_message_type<std::vector<user_ban>>("std::vector<chat::user_ban>");
  cfg.add_message_type<invite_req>("chat::invite_req");
  cfg.add_message_type<room_req>("chat::room_req");
  cfg.add_message_type<room_info>("chat::room_info");
  cfg.add_message_type<search_req>("chat::search_req");
  cfg.add_message_type<part_req>("chat::part_req");
  cfg.add_message_type<my_rooms_req>("chat::my_rooms_req");
  cfg.add_message_type<read_msg>("chat::read_msg");
  cfg.add_message_type<my_rooms_msg>("chat::my_rooms_msg");
  cfg.add_message_type<user_room>("chat::user_room");
  cfg.add_message_type<std::vector<user_room>>("std::vector<chat::user_room>");
  cfg.add_message_type<stored_msg>("chat::stored_msg");
  cfg.add_message_type<std::vector<stored_msg>>("std::vector<chat::stored_msg>");
  cfg.add_message_type<room_snapshot>("chat::room_snapshot");
  cfg.add_message_type<join_req>("chat::join_req");
  cfg.add_message_type<leave_req>("chat::leave_req");
  cfg.add_message_type<send_req>("chat::send_req");
  cfg.add_message_type<history_req>("chat::history_req");
  cfg.add_message_type<presence_req>("chat::presence_req");
  cfg.add_message_type<typing_req>("chat::typing_req");
  cfg.add_message_type<ack_msg>("chat::ack_msg");
  cfg.add_message_type<error_msg>("chat::error_msg");
  cfg.add_message_type<left_msg>("chat::left_msg");
  cfg.add_message_type<history_page>("chat::history_page");
  cfg.add_message_type<presence_list>("chat::presence_list");
  cfg.add_message_type<joined_info>("chat::joined_info");
  cfg.add_message_type<joined_msg>("chat::joined_msg");
  cfg.add_message_type<deliver>("chat::deliver");
  cfg.add_message_type<conns_deliver>("chat::conns_deliver");
  cfg.add_message_type<close_conn>("chat::close_conn");
  cfg.add_message_type<user_online>("chat::user_online");
  cfg.add_message_type<user_offline>("chat::user_offline");
  cfg.add_message_type<user_deliver>("chat::user_deliver");
  cfg.add_message_type<kick_user>("chat::kick_user");
  cfg.add_message_type<room_idle>("chat::room_idle");
  cfg.add_message_type<room_claimed>("chat::room_claimed");
  cfg.add_message_type<claim_check>("chat::claim_check");
  cfg.add_message_type<append_batch>("chat::append_batch");
  cfg.add_message_type<std::vector<append_batch>>("std::vector<chat::append_batch>");
  cfg.add_message_type<range_query>("chat::range_query");
}

}  // namespace chat
