/**
 * Buffers for datagrams a process builds and sends: a ring of fixed-size slots, far more of them than the
 * kernel can have queued, so that a slot is never rewritten while its datagram is still on its way (a send
 * keeps a reference to its bytes until it completes). Taking a slot allocates nothing.
 *
 *   const ring = new SendRing(2048, 4096);
 *   const at = ring.next();
 *   const n = writeSomething(ring.buf, at);
 *   socket.send(ring.buf, at, n, port, host);
 */
export class SendRing {
  readonly buf: Uint8Array;
  private slot = 0;

  constructor(
    readonly slotBytes: number,
    private readonly slots: number,
  ) {
    this.buf = new Uint8Array(slotBytes * slots);
  }

  /** The offset of the next slot in `buf`. */
  next(): number {
    const at = this.slot * this.slotBytes;
    this.slot = (this.slot + 1) % this.slots;
    return at;
  }
}
