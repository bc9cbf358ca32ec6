"""Documentation shared by the sapphire health modules (extends_documentation_fragment: sapphire.<name>)."""


class ModuleDocFragment:
    """Option docs of the connection settings every health module shares."""

    HEALTH = r"""
attributes:
  check_mode:
    description: Can run in check mode and return the same result; it only reads.
    support: full
  diff_mode:
    description: There is nothing to diff; the module changes nothing.
    support: none
"""

    # The cluster a Kubernetes module of the toolkit talks to.
    KUBERNETES = r"""
options:
  kubeconfig:
    description: Path of the kubeconfig; omitted means C(KUBECONFIG) or C(~/.kube/config).
    type: path
  context:
    description: Context of the kubeconfig to use.
    type: str
"""

    KEY_PREFIX = r"""
options:
  key_prefix:
    description: Prefix of the platform's Redis keys.
    type: str
    default: sapphire
"""

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

    # Options of the trading checks, shared by their single module and sapphire_trading_info.
    HEARTBEAT = r"""
options:
  agents:
    description:
      - The agents that must be alive, in the shape of the inventory's C(trading_agents)
        (other keys are ignored).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Agent name (the C(<name>) of the heartbeat key).
        type: str
        required: true
      tier:
        description: Configured resource tier; compared with the heartbeat's C(tier) field.
        type: str
      replicas:
        description: Configured replicas; 0 means the agent is expected to be silent.
        type: int
        default: 1
  max_age:
    description: Seconds after which a heartbeat is stale.
    type: float
    default: 60
  halt_status:
    description: Status of the C(trading_halt) check when C(sapphire:halt) is present.
    type: str
    choices: [ok, warn, fail]
    default: warn
  check_unexpected:
    description: Report heartbeat keys of agents not in O(agents).
    type: bool
    default: true
"""

    POSITIONS = r"""
options:
  positions_tolerance:
    description: Largest difference between a position kept in Redis and the trades' sum that still agrees.
    type: float
    default: 0.000001
  trades_retention_days:
    description:
      - Days of trades PostgreSQL keeps (C(postgres_retention_days.trades)); positions kept since before that cannot
        be reconciled from the trades and are reported skipped. 0 means the trades are never dropped.
    type: int
    default: 0
"""

    RISK = r"""
options:
  loss_window:
    description: Seconds of trades summed for the realized loss.
    type: float
    default: 3600
  max_hourly_loss:
    description: Realized loss in USD over O(loss_window) above which the check fails.
    type: float
    default: 1000
  max_daily_loss_percent:
    description: Loss since the start of the day, in percent of C(day_open_value), above which the check fails.
    type: float
    default: 5
  check_daily_loss:
    description: Read C(sapphire:portfolio) from Redis for the daily loss check.
    type: bool
    default: true
"""
