// Types of the Disot Peer in-page provider (window.disot), for pages written in TypeScript.

export interface ProviderRpcError extends Error {
  /** 4001 rejected, 4100 unauthorized, 4200 unsupported, 4900 unreachable, -32600 invalid
   *  request, -32602 invalid params, -32603 internal, -32005 limit, -32002 busy, -32001 not found */
  code: number;
}

/** `did` and `peerId` are null until the user has granted this origin some permission: the DID
 * is the same on every site, so it is not told to sites the user has not connected. */
export interface DisotStatus { did: string | null; peerId: string | null; connections: number }
export type PermissionName = 'cas' | 'sign' | 'trust' | 'share';
export interface Permission { parentCapability: PermissionName; invoker: string; date: number }
export interface Stored { cid: string; sha256: string; size: number }
/** What `cas.fetch` answers: also the MIME type this origin gave it, and what came from peers
 * for it (both zero when the store had it). */
export interface Fetched extends Stored { mime: string | null; fetched: { blocks: number; bytes: number } }
export interface ObjectInfo extends Stored { pinned: boolean; public: boolean; minTrust: number | null; name?: string | null; mime?: string | null }
/** `total`: the content's size, once its root block is here. */
export interface Transfer { cid: string; bytes: number; blocks: number; total: number | null; startedMs: number }
export interface PeerInfo {
  peerId: string;
  did: string | null;
  /** Whether the peer's signed profile checked out in the identity exchange. */
  verified: boolean;
  displayName: string | null;
  /** One per open connection: 'websocket', 'webrtc-direct', 'webrtc', 'relayed'. */
  transports: string[];
  rttMs: number | null;
  agent: string | null;
  /** Why no direct WebRTC connection could be made (the peer is reached through the relay). */
  directError: string | null;
}

export type GetProgress = (bytes: number, phase: 'fetch' | 'read') => void;

export interface ChangeEvent {
  seq: number;
  /** 'shared', 'revoked', 'collection' (a change made here), 'synced' (from a peer), 'fetched'
   * (a shared object's bytes arrived), 'restarted' (the peer restarted). */
  reasons: string[];
  missed: boolean;
}

export interface DisotProvider {
  readonly isDisot: true;
  request(args: { method: 'disot_status' }): Promise<DisotStatus>;
  request(args: { method: 'disot_requestPermissions'; params: [Partial<Record<PermissionName, Record<string, never>>>] | PermissionName[] }): Promise<Permission[]>;
  request(args: { method: 'disot_getPermissions' }): Promise<Permission[]>;
  request(args: { method: string; params?: unknown[] | Record<string, unknown> }): Promise<unknown>;
  /** Shares or this site's collections changed (here, in another tab, or by a peer's sync).
   * Needs the `share` permission (a listener added before it is granted starts hearing once this
   * page's request for it is granted); re-read with `shares.list()` / `collections.get()`.
   * `missed`: more changed than the peer keeps (the last 64 this site heard of), so re-read
   * everything. One event tells of every change since the last, so `seq` may move by more than one. */
  on(event: 'change', listener: (event: ChangeEvent) => void): DisotProvider;
  removeListener(event: 'change', listener: (event: ChangeEvent) => void): DisotProvider;
  readonly cas: {
    /** Name is a CID or `sha256:<hex>`; either works everywhere but `fetch` (by CID: peers know no `sha256:` names). */
    put(data: Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array>,
        options?: {
          name?: string; mime?: string; public?: boolean; minTrust?: number;
          /** The content's length, if known before a stream is read; content of another length fails (-32602). */
          size?: number;
          /** `totalBytes`: the whole, where it is known (not for a stream without `size`). */
          onProgress?: (bytesStored: number, totalBytes?: number) => void;
        }): Promise<Stored>;
    /** Not held here? By CID, get() fetches from peers first (Bitswap), with progress. */
    /** `onProgress(bytes, phase)`: bytes fetched from peers so far ('fetch', only when not held
     * here), then bytes read to the page ('read', counting from 0 again). `offset` and `length`
     * are whole numbers of bytes (-32602 otherwise). */
    get(name: string, options?: { offset?: number; length?: number; onProgress?: GetProgress; as?: 'bytes' }): Promise<Uint8Array>;
    /** As a Blob: built of the Blobs the store keeps (each checked first), without their bytes passing through the page. */
    get(name: string, options: { offset?: number; length?: number; onProgress?: GetProgress; as: 'blob' }): Promise<Blob>;
    get(name: string, options: { offset?: number; length?: number; onProgress?: GetProgress; as: 'stream' }): Promise<ReadableStream<Uint8Array>>;
    stat(name: string): Promise<ObjectInfo>;
    has(name: string): Promise<boolean>;
    list(): Promise<ObjectInfo[]>;
    pin(name: string): Promise<ObjectInfo>;
    unpin(name: string): Promise<ObjectInfo>;
    /** Fetch from peers by CID into this browser's store without reading it. */
    fetch(cid: string): Promise<Fetched>;
    transfers(): Promise<Transfer[]>;
  };
  readonly p2p: {
    peers(): Promise<PeerInfo[]>;
  };
  /** Ask the user to sign a DISOT entry with this peer's DID (needs the `sign` permission). */
  sign(entry: { contentHash: string; type: string; metadata?: Record<string, unknown>; id?: string }): Promise<DisotEntry>;
  /** Check a signed entry (open to every page). */
  verify(entry: DisotEntry): Promise<{ valid: boolean; signer?: string; reason?: string }>;
  /** Whom this peer trusts (needs the `trust` permission). */
  readonly trust: {
    list(): Promise<TrustEntry[]>;
    score(did: string, context?: string): Promise<{ did: string; context: string; score: number | null; path: string[] | null }>;
    /** Ask the user to trust `did` at `level` (0–100; 0 revokes); 4001 if they refuse. */
    set(did: string, level: number, context?: string): Promise<{ did: string; level: number; context: string }>;
  };
  /** Needs the `share` permission. */
  readonly shares: {
    /** Ask the user to share an object this origin put, or a collection; 4001 if they refuse. */
    share(params: { cid?: string; collection?: string; to: string | string[]; note?: string }): Promise<Share[]>;
    list(): Promise<{ sharedWithMe: (Share & { held: boolean })[]; sharedByMe: (Share & { held: boolean })[] }>;
  };
  /** Named, ordered lists of CIDs that sync with their members (Automerge). Needs `share`. */
  readonly collections: {
    /** Every collection, without its entries. */
    list(): Promise<CollectionInfo[]>;
    /** With its entries: all of them, or `limit` from `offset`. */
    get(id: string, page?: { offset?: number; limit?: number }): Promise<Collection>;
    create(name: string): Promise<{ id: string }>;
    add(id: string, cid: string, meta?: { name?: string; mime?: string; size?: number }): Promise<CollectionInfo>;
    remove(id: string, cid: string): Promise<{ removed: number }>;
    rename(id: string, name: string): Promise<CollectionInfo>;
    member(id: string, did: string, role: 'editor' | 'reader' | 'none'): Promise<CollectionInfo>;
  };
}

export interface Share {
  id: string;
  from: string;
  to: string;
  cid?: string;
  sha256?: string;
  size?: number;
  name?: string;
  mime?: string;
  collection?: string;
  note: string;
  createdMs: number;
  revoked: boolean;
}

/** A collection without its entries: `count` is how many it has. */
export interface CollectionInfo {
  id: string;
  name: string;
  owner: string;
  editors: string[];
  readers: string[];
  count: number;
}

export interface Collection extends CollectionInfo {
  entries: { cid: string; name?: string; mime?: string; size?: number; addedBy: string; addedMs: number }[];
}

/** One peer this peer trusts: `level` is null when trusted only through others. */
export interface TrustEntry {
  did: string;
  level: number | null;
  context: string;
  score: number | null;
  path: string[] | null;
  issuedMs?: number;
}

/** A signed DISOT entry: Ed25519 by `signer` over RFC 8785 JSON of every other field. */
export interface DisotEntry {
  id: string;
  contentHash: string;
  type: string;
  metadata: Record<string, unknown>;
  timestamp: number;
  signer: string;
  signature: string;
  [extra: string]: unknown;
}

export interface DisotProviderDetail {
  info: { uuid: string; name: string; icon: string; rdns: 'org.disot.peer' };
  provider: DisotProvider;
}

declare global {
  interface Window { disot?: DisotProvider }
  interface WindowEventMap { 'disot:announceProvider': CustomEvent<DisotProviderDetail> }
}
