/**
 * Hand-built IPv4/UDP packets for the wire tests, independent of src/packet so that the frozen samples
 * and the tshark check do not move when the packet module does.
 */

export interface UdpSpec {
  src: readonly [number, number, number, number];
  dst: readonly [number, number, number, number];
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
  id?: number;
  ttl?: number;
}

/** The ones'-complement sum of 16-bit big-endian words (RFC 1071), folded, not yet inverted. */
export function onesSum(bytes: Uint8Array, start = 0, end = bytes.length, initial = 0): number {
  let sum = initial;
  for (let i = start; i + 1 < end; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if ((end - start) % 2 === 1) sum += bytes[end - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** An IPv4 packet (20-byte header, DF set) carrying one UDP datagram, both checksums filled in. */
export function ipv4Udp(spec: UdpSpec): Uint8Array {
  const udpLength = 8 + spec.payload.length;
  const total = 20 + udpLength;
  const p = new Uint8Array(total);
  p[0] = 0x45;
  p[2] = total >>> 8;
  p[3] = total & 0xff;
  const id = spec.id ?? 0x1234;
  p[4] = id >>> 8;
  p[5] = id & 0xff;
  p[6] = 0x40; // DF
  p[8] = spec.ttl ?? 64;
  p[9] = 17;
  p.set(spec.src, 12);
  p.set(spec.dst, 16);
  const ipSum = ~onesSum(p, 0, 20) & 0xffff;
  p[10] = ipSum >>> 8;
  p[11] = ipSum & 0xff;

  p[20] = spec.srcPort >>> 8;
  p[21] = spec.srcPort & 0xff;
  p[22] = spec.dstPort >>> 8;
  p[23] = spec.dstPort & 0xff;
  p[24] = udpLength >>> 8;
  p[25] = udpLength & 0xff;
  p.set(spec.payload, 28);
  let udpSum = ~onesSum(p, 20, total, pseudoHeaderSum(p, udpLength)) & 0xffff;
  if (udpSum === 0) udpSum = 0xffff; // 0 means "no checksum" in UDP over IPv4
  p[26] = udpSum >>> 8;
  p[27] = udpSum & 0xff;
  return p;
}

function pseudoHeaderSum(ip: Uint8Array, l4Length: number): number {
  return onesSum(ip, 12, 20) + ip[9]! + l4Length;
}

/** Whether the IPv4 header checksum and the UDP checksum of `ip` verify. */
export function checksumsValid(ip: Uint8Array): { ip: boolean; udp: boolean } {
  const ihl = (ip[0]! & 0x0f) * 4;
  const total = (ip[2]! << 8) | ip[3]!;
  return {
    ip: onesSum(ip, 0, ihl) === 0xffff,
    udp: onesSum(ip, ihl, total, pseudoHeaderSum(ip, total - ihl)) === 0xffff,
  };
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Parses hex text that may contain whitespace and `#` comments to the end of a line. */
export function fromHex(text: string): Uint8Array {
  const digits = text.replace(/#[^\n]*/g, '').replace(/\s+/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(digits)) throw new Error('not an even-length hex string');
  return new Uint8Array(Buffer.from(digits, 'hex'));
}
