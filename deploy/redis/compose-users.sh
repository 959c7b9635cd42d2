#!/bin/sh
# The compose stack's Redis (deploy/docker-compose.yml) starts through this: it loads the
# flashcall-api user of users.acl, with FLASHCALL_REDIS_API_PASSWORD for its password, then
# runs the image's own entrypoint with what compose gave as the command.
#
# Only that user, so that the API connects with exactly its production rules while the
# other services of the stack still connect as the default user without a password, as
# they always have here; production installs the whole file and turns the default user
# off (docs/operations.md, "Least privilege").
set -eu

source_file="$(dirname "$0")/users.acl"
# Outside the data volume, so the password never outlives the container.
acl_file="${FLASHCALL_ACL_FILE:-/tmp/flashcall-users.acl}"
password="${FLASHCALL_REDIS_API_PASSWORD:?set FLASHCALL_REDIS_API_PASSWORD}"
# It goes into an ACL line and the API's REDIS_URL unescaped (openssl rand -hex 32 fits).
case "$password" in
  *[!A-Za-z0-9_-]*)
    echo "FLASHCALL_REDIS_API_PASSWORD: only letters, digits, _ and - (it is written into a URL)" >&2
    exit 1
    ;;
esac

umask 077
{
  echo 'user default on nopass ~* &* +@all'
  # index/substr rather than sub(): the password is copied as it is, never read as a pattern.
  awk -v placeholder='${FLASHCALL_REDIS_API_PASSWORD}' '
    index($0, "user flashcall-api ") == 1 {
      at = index($0, placeholder)
      print substr($0, 1, at - 1) ENVIRON["FLASHCALL_REDIS_API_PASSWORD"] substr($0, at + length(placeholder))
    }' "$source_file"
} >"$acl_file"
if ! grep -q '^user flashcall-api on >' "$acl_file"; then
  echo "$source_file holds no flashcall-api user" >&2
  exit 1
fi
# The image's entrypoint runs Redis as the redis user, which must read the file.
if [ "$(id -u)" = 0 ] && id redis >/dev/null 2>&1; then
  chown redis "$acl_file"
fi
exec docker-entrypoint.sh "$@" --aclfile "$acl_file"
