# Code generation for services/control-plane. Include from the top Makefile
# (`include services/control-plane/proto.mk`, then `proto: controlplane-proto`) or run
#   make -f services/control-plane/proto.mk controlplane-proto
# from the repository root. The generated code under gen/ is committed, so builds never need protoc.
#
# Needs protoc (Debian's protobuf-compiler, with the well-known types in /usr/include). The plugins
# are the `tool` dependencies of services/control-plane/go.mod, built into .run/protoc-bin.

CP_DIR        ?= services/control-plane
CP_PROTO_DIR  := $(CP_DIR)/proto
CP_GEN_DIR    := $(CP_DIR)/gen
CP_PLUGIN_BIN ?= $(abspath .run/protoc-bin)
CP_PROTOC     ?= protoc
CP_WKT_INCLUDE ?= /usr/include
CP_HTTP_RULES := $(CP_PROTO_DIR)/distcache/v1/controlplane_http.yaml

.PHONY: controlplane-proto controlplane-protoc-plugins
controlplane-protoc-plugins:
	@mkdir -p $(CP_PLUGIN_BIN)
	cd $(CP_DIR) && go build -o $(CP_PLUGIN_BIN)/ \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc \
		github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway \
		github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2

controlplane-proto: controlplane-protoc-plugins
	@mkdir -p $(CP_GEN_DIR)
	PATH="$(CP_PLUGIN_BIN):$$PATH" $(CP_PROTOC) -I $(CP_PROTO_DIR) -I $(CP_WKT_INCLUDE) \
		--go_out=$(CP_GEN_DIR) --go_opt=paths=source_relative \
		--go-grpc_out=$(CP_GEN_DIR) --go-grpc_opt=paths=source_relative \
		--grpc-gateway_out=$(CP_GEN_DIR) --grpc-gateway_opt=paths=source_relative \
		--grpc-gateway_opt=grpc_api_configuration=$(CP_HTTP_RULES) \
		--openapiv2_out=$(CP_GEN_DIR) \
		--openapiv2_opt=grpc_api_configuration=$(CP_HTTP_RULES) \
		--openapiv2_opt=json_names_for_fields=false \
		--openapiv2_opt=use_allof_for_refs=true \
		--openapiv2_opt=openapi_configuration=$(CP_PROTO_DIR)/distcache/v1/controlplane_openapi.yaml \
		$(CP_PROTO_DIR)/distcache/v1/controlplane.proto
	cd tools && go run ./cmd/openapitidy $(abspath $(CP_GEN_DIR))/distcache/v1/controlplane.swagger.json
