#ifndef FANFIC_CRABBITMQ_SHIM_H
#define FANFIC_CRABBITMQ_SHIM_H

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

// amqp_login_with_properties is C-variadic (the SASL arguments), which Swift
// cannot call; this fixes the PLAIN mechanism's two arguments.
static inline amqp_rpc_reply_t fanfic_amqp_login_plain(
    amqp_connection_state_t state, const char *vhost, int channel_max,
    int frame_max, int heartbeat, const amqp_table_t *client_properties,
    const char *username, const char *password) {
  return amqp_login_with_properties(state, vhost, channel_max, frame_max,
                                    heartbeat, client_properties,
                                    AMQP_SASL_METHOD_PLAIN, username, password);
}

// Macros Swift does not import as constants.
static const uint16_t fanfic_amqp_basic_content_type_flag = AMQP_BASIC_CONTENT_TYPE_FLAG;
static const uint16_t fanfic_amqp_basic_content_encoding_flag = AMQP_BASIC_CONTENT_ENCODING_FLAG;
static const uint16_t fanfic_amqp_basic_headers_flag = AMQP_BASIC_HEADERS_FLAG;
static const uint16_t fanfic_amqp_basic_delivery_mode_flag = AMQP_BASIC_DELIVERY_MODE_FLAG;
static const uint16_t fanfic_amqp_basic_priority_flag = AMQP_BASIC_PRIORITY_FLAG;
static const uint16_t fanfic_amqp_basic_correlation_id_flag = AMQP_BASIC_CORRELATION_ID_FLAG;
static const uint16_t fanfic_amqp_basic_reply_to_flag = AMQP_BASIC_REPLY_TO_FLAG;
static const uint16_t fanfic_amqp_basic_expiration_flag = AMQP_BASIC_EXPIRATION_FLAG;
static const uint16_t fanfic_amqp_basic_message_id_flag = AMQP_BASIC_MESSAGE_ID_FLAG;
static const uint16_t fanfic_amqp_basic_timestamp_flag = AMQP_BASIC_TIMESTAMP_FLAG;
static const uint16_t fanfic_amqp_basic_type_flag = AMQP_BASIC_TYPE_FLAG;
static const uint16_t fanfic_amqp_basic_app_id_flag = AMQP_BASIC_APP_ID_FLAG;
static const uint16_t fanfic_amqp_basic_user_id_flag = AMQP_BASIC_USER_ID_FLAG;

// Method numbers (cast macros that Swift does not import).
static const amqp_method_number_t fanfic_amqp_connection_close_method = AMQP_CONNECTION_CLOSE_METHOD;
static const amqp_method_number_t fanfic_amqp_connection_close_ok_method = AMQP_CONNECTION_CLOSE_OK_METHOD;
static const amqp_method_number_t fanfic_amqp_connection_blocked_method = AMQP_CONNECTION_BLOCKED_METHOD;
static const amqp_method_number_t fanfic_amqp_connection_unblocked_method = AMQP_CONNECTION_UNBLOCKED_METHOD;
static const amqp_method_number_t fanfic_amqp_channel_close_method = AMQP_CHANNEL_CLOSE_METHOD;
static const amqp_method_number_t fanfic_amqp_channel_close_ok_method = AMQP_CHANNEL_CLOSE_OK_METHOD;
static const amqp_method_number_t fanfic_amqp_basic_deliver_method = AMQP_BASIC_DELIVER_METHOD;
static const amqp_method_number_t fanfic_amqp_basic_ack_method = AMQP_BASIC_ACK_METHOD;
static const amqp_method_number_t fanfic_amqp_basic_nack_method = AMQP_BASIC_NACK_METHOD;
static const amqp_method_number_t fanfic_amqp_basic_return_method = AMQP_BASIC_RETURN_METHOD;
static const amqp_method_number_t fanfic_amqp_basic_cancel_method = AMQP_BASIC_CANCEL_METHOD;
static const amqp_method_number_t fanfic_amqp_basic_get_ok_method = AMQP_BASIC_GET_OK_METHOD;
static const amqp_method_number_t fanfic_amqp_basic_get_empty_method = AMQP_BASIC_GET_EMPTY_METHOD;
static const amqp_method_number_t fanfic_amqp_exchange_declare_method = AMQP_EXCHANGE_DECLARE_METHOD;
static const amqp_method_number_t fanfic_amqp_exchange_declare_ok_method = AMQP_EXCHANGE_DECLARE_OK_METHOD;
static const amqp_method_number_t fanfic_amqp_queue_declare_method = AMQP_QUEUE_DECLARE_METHOD;
static const amqp_method_number_t fanfic_amqp_queue_declare_ok_method = AMQP_QUEUE_DECLARE_OK_METHOD;
static const amqp_method_number_t fanfic_amqp_queue_bind_method = AMQP_QUEUE_BIND_METHOD;
static const amqp_method_number_t fanfic_amqp_queue_bind_ok_method = AMQP_QUEUE_BIND_OK_METHOD;

#endif
