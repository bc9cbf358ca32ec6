"""Documentation shared by the sapphire health modules (extends_documentation_fragment: sapphire.<name>)."""


class ModuleDocFragment:
    """Option docs of the connection settings every health module shares."""

    REDIS = r"""
options:
  redis_host:
    description: Host name or address of the Redis server.
    type: str
    default: 127.0.0.1
  redis_port:
    description: TCP port of the Redis server (1-65535).
    type: int
    default: 6379
  redis_username:
    description: ACL user name; omit for the default user.
    type: str
  redis_password:
    description: Password (C(requirepass) or the ACL user's password).
    type: str
  redis_db:
    description: Database number.
    type: int
    default: 0
  redis_tls:
    description: Connect with TLS.
    type: bool
    default: false
  redis_tls_ca_path:
    description: CA bundle that signed the server certificate.
    type: path
  redis_tls_verify:
    description: Verify the server certificate when O(redis_tls=true).
    type: bool
    default: true
"""

    POSTGRES = r"""
options:
  postgres_host:
    description: Host name, address or socket directory of the server.
    type: str
    default: 127.0.0.1
  postgres_port:
    description: TCP port (1-65535).
    type: int
    default: 5432
  postgres_user:
    description: Role to log in as. Lag columns of C(pg_stat_replication) need C(pg_monitor).
    type: str
    default: sapphire
  postgres_password:
    description: Password of O(postgres_user).
    type: str
  postgres_database:
    description: Database holding the trading tables.
    type: str
    default: sapphire
  postgres_sslmode:
    description: libpq C(sslmode).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
    default: prefer
  postgres_sslrootcert:
    description: CA bundle for C(verify-ca)/C(verify-full).
    type: path
"""

    HTTP = r"""
options:
  validate_certs:
    description: Verify the server certificate for https URLs.
    type: bool
    default: true
  ca_path:
    description: CA bundle for https URLs.
    type: path
"""

    TIMEOUT = r"""
options:
  connect_timeout:
    description: Seconds to wait for the connection and for each command.
    type: float
    default: 5.0
"""
