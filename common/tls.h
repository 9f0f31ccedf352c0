// gRPC credentials from PEM files, for both servers and for the
// orchestrator's calls to the denoisers. Errors name the flag at fault and
// never echo key material.
//
//   ASSIGN_OR_RETURN(auto creds, ServerCredentialsFromFiles({cert, key, client_ca}));
//   ASSIGN_OR_RETURN(auto channel_creds, ChannelCredentialsFromFiles({ca, cert, key}));
#ifndef DGRID_COMMON_TLS_H_
#define DGRID_COMMON_TLS_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace dgrid {

struct ServerTlsFiles {
  std::string cert;       // --tls_cert
  std::string key;        // --tls_key
  std::string client_ca;  // --tls_client_ca: require and verify client certificates
};

// Insecure credentials when no file is given; TLS with cert and key; mutual
// TLS when a client CA is given too.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFiles(
    const ServerTlsFiles& files);

struct ChannelTlsFiles {
  std::string ca;    // trust only servers signed by this CA; enables TLS
  std::string cert;  // client certificate for mutual TLS
  std::string key;
  // Errors name the flags as this prefix and ca, cert or key: dgrid's
  // --tls_ca, the orchestrator's --denoiser_ca.
  std::string flags = "--tls_";
};

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFromFiles(
    const ChannelTlsFiles& files);

// The whole file, or INVALID_ARGUMENT naming `flag`.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& flag);

// A bearer token from a file: "" for no path, else the file less its
// surrounding whitespace (the newline of `echo token > file`); a token with
// a space, a control character or non-ASCII inside is refused.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path, const std::string& flag);

}  // namespace dgrid

#endif  // DGRID_COMMON_TLS_H_
