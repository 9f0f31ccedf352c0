#include "common/tls.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace dgrid {

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& flag) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is a folder, not a file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::stringstream s;
  s << in.rdbuf();
  if (s.str().empty()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " is empty"));
  return s.str();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path, const std::string& flag) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> token = ReadSecretFile(path, flag);
  if (!token.ok()) return token.status();
  // Surrounding whitespace goes (the newline of `echo token > file`), as the
  // Python client drops it from the text it is given: a trailing space kept
  // here made the same file's token differ between clients.
  const std::string stripped(absl::StripAsciiWhitespace(*token));
  // An empty token means no authentication: a file of a newline alone must
  // not turn it off.
  if (stripped.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " holds no token"));
  }
  // A header value cannot carry it (not echoed: it is a secret).
  if (!std::all_of(stripped.begin(), stripped.end(),
                   [](char c) { return c > 0x20 && c < 0x7f; })) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": the token in ", path, " holds a space, a control character or non-ASCII"));
  }
  return stripped;
}

namespace {

// INVALID_ARGUMENT unless `text` holds a PEM block whose label ends in
// `label` ("-----BEGIN EC PRIVATE KEY-----" is a private key too), among
// any others: gRPC skips the rest (an EC key's parameters, a key and its
// certificate in one file).
absl::Status LooksLikePem(const std::string& text, absl::string_view label, absl::string_view flag,
                          const std::string& path) {
  constexpr char kBegin[] = "-----BEGIN ";
  constexpr size_t kBeginSize = sizeof(kBegin) - 1;
  for (size_t begin = text.find(kBegin); begin != std::string::npos;
       begin = text.find(kBegin, begin + kBeginSize)) {
    const size_t end = text.find("-----", begin + kBeginSize);
    if (end == std::string::npos) break;
    if (absl::EndsWith(absl::string_view(text).substr(begin, end - begin), label)) {
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(flag, ": ", path, " holds no PEM ", absl::AsciiStrToLower(label)));
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFiles(
    const ServerTlsFiles& f) {
  if (f.cert.empty() && f.key.empty()) {
    if (!f.client_ca.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (f.cert.empty() || f.key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  absl::StatusOr<std::string> cert = ReadSecretFile(f.cert, "--tls_cert");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadSecretFile(f.key, "--tls_key");
  if (!key.ok()) return key.status();
  // gRPC's own refusal comes only at the listen, as "cannot listen".
  if (absl::Status pem = LooksLikePem(*cert, "CERTIFICATE", "--tls_cert", f.cert); !pem.ok()) {
    return pem;
  }
  if (absl::Status pem = LooksLikePem(*key, "PRIVATE KEY", "--tls_key", f.key); !pem.ok()) {
    return pem;
  }
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!f.client_ca.empty()) {
    absl::StatusOr<std::string> ca = ReadSecretFile(f.client_ca, "--tls_client_ca");
    if (!ca.ok()) return ca.status();
    RETURN_IF_ERROR(LooksLikePem(*ca, "CERTIFICATE", "--tls_client_ca", f.client_ca));
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFromFiles(
    const ChannelTlsFiles& f) {
  const std::string ca_flag = f.flags + "ca", cert_flag = f.flags + "cert",
                    key_flag = f.flags + "key";
  if (f.ca.empty()) {
    if (!f.cert.empty() || !f.key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a client certificate (", cert_flag, ", ", key_flag, ") needs the server's CA (",
          ca_flag, ") as well"));
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  absl::StatusOr<std::string> ca = ReadSecretFile(f.ca, ca_flag);
  if (!ca.ok()) return ca.status();
  // gRPC's own refusal comes only at the first call, as log lines and
  // "UNAVAILABLE: empty address list".
  RETURN_IF_ERROR(LooksLikePem(*ca, "CERTIFICATE", ca_flag, f.ca));
  ssl.pem_root_certs = *ca;
  if (!f.cert.empty() || !f.key.empty()) {
    if (f.cert.empty() || f.key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(cert_flag, " and ", key_flag, " go together"));
    }
    absl::StatusOr<std::string> cert = ReadSecretFile(f.cert, cert_flag);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadSecretFile(f.key, key_flag);
    if (!key.ok()) return key.status();
    RETURN_IF_ERROR(LooksLikePem(*cert, "CERTIFICATE", cert_flag, f.cert));
    RETURN_IF_ERROR(LooksLikePem(*key, "PRIVATE KEY", key_flag, f.key));
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace dgrid
