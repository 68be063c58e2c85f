# Grove's public API: the whole of it, so that clients in any language can code
# against it now. Operations that are not built yet fail with a Cap'n Proto
# exception of type `unimplemented` whose reason starts with "[notImplemented]".
#
# Errors. Every failure is a Cap'n Proto exception. Its reason starts with a
# bracketed code from `ErrorCode` below, then a human-readable message, e.g.
#   "[containerNotFound] unknown handle: web-1"
#   "[invalidSpec] spec.handle: '/' is not allowed (use A-Z a-z 0-9 . _ -)"
# Clients match on the code, never on the message text.
#
# Byte streams are push-based: the producer calls `write` as data arrives and
# `done` once at the end. `write` is a Cap'n Proto streaming call, so the
# producer is held back (flow control) when the consumer is slow.

@0xc38d92d1282175b9;

enum ErrorCode {
  internal @0;            # a bug or an unexpected host failure
  containerNotFound @1;   # "unknown handle: X"
  handleTaken @2;         # create: the handle is in use
  processNotFound @3;     # "unknown process: X"
  executableNotFound @4;  # run: the path does not name an executable
  invalidSpec @5;         # a field is malformed; the message names it
  limitExceeded @6;       # max containers, pool exhausted, ...
  policyRefused @7;       # grove-helper's policy forbids the request
  serviceUnavailable @8;  # grove-helper or wshd cannot be reached
  notImplemented @9;      # an operation a later release builds
  alreadyDestroying @10;  # destroy while a destroy of that handle runs
  invalidState @11;       # the container's state forbids the operation
}

# ---------------------------------------------------------------------------
# Server

interface Grove {
  ping @0 () -> ();
  capacity @1 () -> (capacity :Capacity);
  create @2 (spec :ContainerSpec) -> (container :Container);
  lookup @3 (handle :Text) -> (container :Container);
  # Handles of the containers whose properties include every given pair (AND).
  list @4 (properties :List(Property)) -> (handles :List(Text));
  destroy @5 (handle :Text) -> ();
  bulkInfo @6 (handles :List(Text)) -> (results :List(InfoResult));
  bulkMetrics @7 (handles :List(Text)) -> (results :List(MetricsResult));
  # The image cache: registry pulls, listing, removal and its GC.
  images @8 () -> (images :Images);
}

struct Capacity {
  memoryInBytes @0 :UInt64;
  diskInBytes @1 :UInt64;
  schedulableDiskInBytes @2 :UInt64;
  maxContainers @3 :UInt64;
}

struct InfoResult {
  handle @0 :Text;
  union {
    info @1 :ContainerInfo;
    error @2 :Text;       # "[code] message", as for exceptions
  }
}

struct MetricsResult {
  handle @0 :Text;
  union {
    metrics @1 :Metrics;
    error @2 :Text;
  }
}

# ---------------------------------------------------------------------------
# Container

interface Container {
  handle @0 () -> (handle :Text);
  info @1 () -> (info :ContainerInfo);
  run @2 (spec :ProcessSpec, io :ProcessIO) -> (process :Process);
  attach @3 (processId :Text, io :ProcessIO) -> (process :Process);
  # kill=false: SIGTERM to every process, SIGKILL after 10 s; kill=true: SIGKILL.
  # The container stays (state "stopped"); files can still be streamed.
  stop @4 (kill :Bool) -> ();

  # Unpack the tar written to `sink` at `path`, as `user`.
  streamIn @5 (path :Text, user :Text) -> (sink :ByteStream);
  # Write a tar of `path`, read as `user`, to `sink`.
  streamOut @6 (path :Text, user :Text, sink :ByteStream) -> ();

  # Shape the container's traffic (both directions). A rate and a burst are
  # both needed; rate 0 (removing the shaping) is refused (invalidSpec).
  limitBandwidth @7 (limits :BandwidthLimits) -> ();
  # Zeros: not shaped.
  currentBandwidthLimits @8 () -> (limits :BandwidthLimits);
  limitCpu @9 (limits :CpuLimits) -> ();
  currentCpuLimits @10 () -> (limits :CpuLimits);
  limitDisk @11 (limits :DiskLimits) -> ();
  currentDiskLimits @12 () -> (limits :DiskLimits);
  limitMemory @13 (limits :MemoryLimits) -> ();
  currentMemoryLimits @14 () -> (limits :MemoryLimits);
  limitPids @15 (limits :PidLimits) -> ();
  currentPidLimits @16 () -> (limits :PidLimits);

  # TCP to hostPort on the host's own addresses goes to containerPort.
  # hostPort 0 takes one from the pool; containerPort 0 means "same as hostPort".
  # Answers the ports used. A value above 65535 is invalidSpec.
  netIn @17 (hostPort :UInt32, containerPort :UInt32) -> (hostPort :UInt32, containerPort :UInt32);
  # Egress is denied until rules allow it; rules only add. bulkNetOut adds
  # all its rules or none (at most 64 per call).
  netOut @18 (rule :NetOutRule) -> ();
  bulkNetOut @19 (rules :List(NetOutRule)) -> ();

  metrics @20 () -> (metrics :Metrics);

  properties @21 () -> (properties :List(Property));
  property @22 (name :Text) -> (value :Text);
  setProperty @23 (name :Text, value :Text) -> ();
  removeProperty @24 (name :Text) -> ();

  # Restart the idle countdown with this grace time; 0 = never expire.
  setGraceTime @25 (graceTimeSeconds :UInt64) -> ();

  # Every process in the container as its init (wshd) sees it in the
  # container's /proc, wshd itself included. A container whose wshd
  # predates this call answers notImplemented.
  top @26 () -> (processes :List(ProcessStatus), truncated :Bool);
}

# One process of `top`. The text fields come from inside the container
# (untrusted: a client printing them to a terminal should escape control
# characters). truncated: the list stops short (about 100 KiB of it fits in
# one answer).
struct ProcessStatus {
  pid @0 :Int32;                # in the container's PID namespace
  parentPid @1 :Int32;
  uid @2 :UInt32;               # the real uid, as the container sees it
  user @3 :Text;                # its name in the container's /etc/passwd; empty: none
  state @4 :Text;               # /proc's one-letter state: R, S, D, Z, T, ...
  cpuMillis @5 :UInt64;         # user + system CPU time
  elapsedMillis @6 :UInt64;     # since the process started
  rssBytes @7 :UInt64;
  command @8 :Text;             # the command line (at most 1 KiB), or [name] without one
  processId @9 :Text;           # the API process it is, or descends from; empty: none
}

struct ContainerSpec {
  handle @0 :Text;              # empty: the server generates one
  rootfs @1 :Text;              # empty: the default rootfs
  image @2 :ImageRef;           # an image instead of a rootfs directory
  env @3 :List(Text);           # "NAME=value", the base of every process's env
  bindMounts @4 :List(BindMount);
  # "a.b.c.d" or "a.b.c.d/n" (n 0..32): the container's address, which must
  # lie in the server's pool (the pool's prefix applies; n is checked for
  # syntax only); empty: a free address from the pool.
  network @5 :Text;
  properties @6 :List(Property);
  graceTimeSeconds @7 :UInt64;  # 0: the server default
  privileged @8 :Bool;          # no user namespace (policy permitting)
  limits @9 :Limits;
  # Applied once the container exists, as bulkNetOut and netIn would; if
  # any fails, the create fails and leaves no container.
  netOut @10 :List(NetOutRule);
  netIn @11 :List(PortMapping);
  # Told how a registry pull (docker://) advances; may be null.
  pullProgress @12 :PullProgress;
}

# How far a pull has come: bytes of blobs downloaded out of all the image's
# blobs (config and layers). Called as downloads advance, at least once at
# the end with bytesDone = bytesTotal. Blobs already in the server's cache
# count as done from the start.
interface PullProgress {
  update @0 (bytesDone :UInt64, bytesTotal :UInt64) -> stream;
  # One blob's progress (a layer's or the config's), for a display per
  # layer: first with bytesDone 0 (or = bytesTotal and cached = true when
  # the cache has it), last with bytesDone = bytesTotal. A client that does
  # not implement it gets `update` alone (so it is not a streaming call: a
  # failed one would fail every later call on the capability).
  blob @1 (digest :Text, bytesDone :UInt64, bytesTotal :UInt64, cached :Bool) -> ();
}

# The server's image cache. Registry images (docker://) are pulled into a
# blob cache in groved's state dir and unpacked into the depot's layer
# store at their first create; both stay until removed here or by the GC
# (groved's image_cache_max_bytes and image_cache_max_age). An image or
# layer a container uses is never removed. Images are named by reference
# (`busybox`, `127.0.0.1:5000/app:v1`, `docker://…`) or by manifest digest
# (`sha256:…`, or 12 or more of its hex digits).
interface Images {
  # Pull into the cache (a tag is asked of the registry again; blobs the
  # cache holds are not downloaded again).
  pull @0 (image :ImageRef, progress :PullProgress) -> (image :ImageInfo);
  # Every cached image, and every unpacked layer of the store.
  list @1 () -> (images :List(ImageInfo), layers :List(LayerInfo));
  inspect @2 (name :Text) -> (image :ImageDetail);
  # Remove an image no container uses: its names, the blobs and unpacked
  # layers no other cached image shares. invalidState while a container
  # uses it.
  remove @3 (name :Text) -> (removed :PruneResult);
  # Apply the GC policy now (all = false), or remove every image and layer
  # no container uses (all = true).
  prune @4 (all :Bool) -> (removed :PruneResult);
}

struct ImageInfo {
  names @0 :List(Text);        # "registry-1.docker.io/library/busybox:latest", …
  digest @1 :Text;             # the manifest's, "sha256:…"
  platform @2 :Text;           # "linux/amd64"
  downloadedBytes @3 :UInt64;  # its blobs in the cache (compressed)
  unpackedBytes @4 :UInt64;    # its layers in the depot (0 before the first create)
  pulledAt @5 :UInt64;         # Unix seconds
  lastUsed @6 :UInt64;         # Unix seconds: pulled, or a container made or destroyed
  containers @7 :UInt32;       # containers created from it that exist
}

struct LayerInfo {
  diffId @0 :Text;             # "sha256:…" of the uncompressed tar
  bytes @1 :UInt64;            # allocated on disk (0: not measured yet)
  inodes @2 :UInt64;
  containers @3 :UInt32;       # containers using it
  lastUsed @4 :UInt64;         # Unix seconds; 0: never used by a container
}

struct ImageDetail {
  info @0 :ImageInfo;
  mediaType @1 :Text;          # the manifest's
  config @2 :Text;             # the config blob's digest
  layers @3 :List(ImageLayer);
  env @4 :List(Text);          # the config's Env, WorkingDir, User,
  workingDir @5 :Text;         # Entrypoint and Cmd
  user @6 :Text;
  entrypoint @7 :List(Text);
  cmd @8 :List(Text);
  source @9 :Text;             # the registry or mirror it was pulled from
}

struct ImageLayer {
  digest @0 :Text;             # the blob's
  mediaType @1 :Text;
  size @2 :UInt64;             # the blob's bytes
  diffId @3 :Text;
  unpackedBytes @4 :UInt64;
  unpacked @5 :Bool;           # in the depot's layer store
}

struct PruneResult {
  images @0 :List(Text);       # "digest name, name…" of each image removed
  layers @1 :List(Text);       # diff ids of the unpacked layers removed
  freedBytes @2 :UInt64;       # blobs and layers together
}

struct ImageRef {
  uri @0 :Text;                 # oci:PATH[:TAG], docker-archive:PATH, docker://[HOST/]REPO[:TAG][@DIGEST]
  username @1 :Text;
  password @2 :Text;
}

struct BindMount {
  srcPath @0 :Text;
  dstPath @1 :Text;             # created if missing
  mode @2 :Mode;
  origin @3 :Origin;
  enum Mode { ro @0; rw @1; }
  enum Origin { host @0; container @1; }
}

struct Property {
  name @0 :Text;
  value @1 :Text;
}

struct PortMapping {
  hostPort @0 :UInt32;
  containerPort @1 :UInt32;
}

struct Limits {
  bandwidth @0 :BandwidthLimits;
  cpu @1 :CpuLimits;
  disk @2 :DiskLimits;
  memory @3 :MemoryLimits;
  pid @4 :PidLimits;
}

# Both 0: no shaping. Otherwise both are needed: the rate in bytes per
# second and the most bytes that may pass in one burst.
struct BandwidthLimits {
  rateInBytesPerSecond @0 :UInt64;
  burstRateInBytesPerSecond @1 :UInt64;
}

struct CpuLimits {
  weight @0 :UInt64;            # relative share (cpu.shares on v1)
  quotaPeriodMicros @1 :UInt64; # optional hard quota: CFS period ...
  quotaMicros @2 :UInt64;       # ... and quota per period; 0 = none
  cpuset @3 :Text;              # optional CPU list, e.g. "0-1"
}

# Hard limits on the container's writable layer, enforced by the kernel
# (writes and new files past them fail with EDQUOT; ENOSPC on XFS): a btrfs
# qgroup, or an ext4/XFS project quota, by the depot's filesystem; refused
# (policyRefused, naming the filesystem and the remedy) on any other or with
# quotas off. 0: no limit of that kind. A soft limit is accepted only as 0 or
# equal to its hard limit and read back equal to it. Inode limits need
# ext4/XFS (btrfs qgroups count no inodes: refused there). A new DiskLimits
# replaces the one in force as a whole; currentDiskLimits reads back what was
# set.
struct DiskLimits {
  inodeSoft @0 :UInt64;
  inodeHard @1 :UInt64;         # files, directories, links …
  byteSoft @2 :UInt64;
  byteHard @3 :UInt64;          # at least 1 MiB
  scope @4 :Scope;
  # total: the image and the container's writes together (the image's size
  # and inode count, measured at create, are taken off the limits the
  # writable layer gets); exclusive: the container's own writes only.
  enum Scope { total @0; exclusive @1; }
}

struct MemoryLimits {
  limitInBytes @0 :UInt64;
}

struct PidLimits {
  max @0 :UInt64;
}

# Allows traffic from the container to the given destinations. A field that
# does not fit the protocol is refused (invalidSpec), never ignored.
struct NetOutRule {
  protocol @0 :Protocol;
  networks @1 :List(IpRange);   # empty: every address
  ports @2 :List(PortRange);    # empty: every port; tcp and udp only
  icmps @3 :IcmpControl;        # icmp only, when hasIcmps
  hasIcmps @4 :Bool;            # false: every ICMP type
  log @5 :Bool;                 # tcp and all only
  # icmpv6 is refused: containers have no IPv6.
  enum Protocol { all @0; tcp @1; udp @2; icmp @3; icmpv6 @4; }
}

# IPv4 addresses, inclusive; end empty: start alone.
struct IpRange {
  start @0 :Text;
  end @1 :Text;
}

# Inclusive, 1..65535; end 0: start alone.
struct PortRange {
  start @0 :UInt16;
  end @1 :UInt16;
}

struct IcmpControl {
  type @0 :UInt8;
  code @1 :UInt8;
  hasCode @2 :Bool;
}

struct ContainerInfo {
  state @0 :Text;               # "active" or "stopped"
  events @1 :List(Text);        # e.g. "Out of memory"
  hostIp @2 :Text;              # the host's side of the container's network (its gateway)
  containerIp @3 :Text;
  externalIp @4 :Text;          # groved's `external_ip` setting; empty: not set
  containerPath @5 :Text;
  processIds @6 :List(Text);    # processes that are still running
  properties @7 :List(Property);
  mappedPorts @8 :List(PortMapping);  # the netIn mappings in force
}

# Network figures count the container's traffic as it sees it (rx: received
# by the container). Disk figures come from the container's btrfs qgroup (as of
# the last btrfs commit; inode counts zero: qgroups count none) or ext4/XFS
# project quota (current); all zero where the depot has neither.
struct Metrics {
  memory @0 :MemoryStat;
  cpu @1 :CpuStat;
  disk @2 :DiskStat;
  network @3 :NetworkStat;
  pid @4 :PidStat;
  ageSeconds @5 :Float64;
  cpuEntitlement @6 :UInt64;
}

struct MemoryStat {
  usage @0 :UInt64;
  cache @1 :UInt64;
  rss @2 :UInt64;
  totalUsageTowardLimit @3 :UInt64;
  stat @4 :List(Stat);          # every field of the cgroup's memory.stat
}

struct Stat {
  name @0 :Text;
  value @1 :UInt64;
}

struct CpuStat {
  usageNanos @0 :UInt64;
  userNanos @1 :UInt64;
  systemNanos @2 :UInt64;
}

struct DiskStat {
  totalBytesUsed @0 :UInt64;      # the image's size + the container's writes
  totalInodesUsed @1 :UInt64;     # the image's inodes + the container's
  exclusiveBytesUsed @2 :UInt64;  # the container's own writes
  exclusiveInodesUsed @3 :UInt64; # the container's own inodes
}

struct NetworkStat {
  rxBytes @0 :UInt64;
  txBytes @1 :UInt64;
  rxPackets @2 :UInt64;
  txPackets @3 :UInt64;
}

struct PidStat {
  current @0 :UInt64;
  max @1 :UInt64;
}

# ---------------------------------------------------------------------------
# Processes

struct ProcessSpec {
  path @0 :Text;                # absolute, or looked up in the process's PATH
  args @1 :List(Text);          # argv[1..]
  env @2 :List(Text);           # "NAME=value", after the container's env
  dir @3 :Text;                 # empty: the user's home directory
  user @4 :Text;                # name or uid[:gid]; empty: root
  rlimits @5 :ResourceLimits;
  tty @6 :TtySpec;
  hasTty @7 :Bool;
  id @8 :Text;                  # empty: the server generates one
}

struct ResourceLimits {
  # Each limit applies only when its `has*` bit is set; soft = hard = value.
  as @0 :UInt64;  hasAs @1 :Bool;
  core @2 :UInt64;  hasCore @3 :Bool;
  cpu @4 :UInt64;  hasCpu @5 :Bool;
  data @6 :UInt64;  hasData @7 :Bool;
  fsize @8 :UInt64;  hasFsize @9 :Bool;
  locks @10 :UInt64;  hasLocks @11 :Bool;
  memlock @12 :UInt64;  hasMemlock @13 :Bool;
  msgqueue @14 :UInt64;  hasMsgqueue @15 :Bool;
  nice @16 :UInt64;  hasNice @17 :Bool;
  nofile @18 :UInt64;  hasNofile @19 :Bool;
  nproc @20 :UInt64;  hasNproc @21 :Bool;
  rss @22 :UInt64;  hasRss @23 :Bool;
  rtprio @24 :UInt64;  hasRtprio @25 :Bool;
  sigpending @26 :UInt64;  hasSigpending @27 :Bool;
  stack @28 :UInt64;  hasStack @29 :Bool;
}

struct TtySpec {
  windowSize @0 :WindowSize;
}

struct WindowSize {
  columns @0 :UInt16;
  rows @1 :UInt16;
}

struct ProcessIO {
  stdout @0 :ByteStream;        # null: the output is kept for a later attach
  stderr @1 :ByteStream;
  # false: the process's stdin is at end-of-file from the start.
  # true: Process.stdin gives a ByteStream; its `done` closes the stdin.
  openStdin @2 :Bool;
  # attach only: end each stream (`done`) once it has carried the output
  # that was waiting when attach was called (it may carry a little more, up
  # to a chunk), instead of at the end of the output; what the process
  # writes later waits for the next attach. run refuses it (invalidSpec).
  backlogOnly @3 :Bool;
}

enum Signal {
  terminate @0;
  kill @1;
  interrupt @2;
  hangup @3;
  quit @4;
  user1 @5;
  user2 @6;
  windowChange @7;
}

interface Process {
  id @0 () -> (id :Text);
  # exitStatus >= 0: the process exited with that code (0..255).
  # exitStatus < 0: a signal killed it; the signal number is -exitStatus.
  # Resolves once the process has exited and the output it wrote before
  # exiting has been delivered to the streams given to `run` (their `done`
  # has returned). Exception: when a process it left behind keeps the
  # output pipe open for more than a moment (250 ms) after the exit, wait
  # resolves once the pipe is empty and everything read from it has been
  # sent; the streams end (`done`) when the pipe does.
  wait @1 () -> (exitStatus :Int32);
  signal @2 (signal :Signal) -> ();
  setTty @3 (windowSize :WindowSize) -> ();
  stdin @4 () -> (stream :ByteStream);
}

interface ByteStream {
  write @0 (data :Data) -> stream;
  done @1 ();
}
