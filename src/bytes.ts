/** Where the next small byte strings go: 8 KB slabs, each string cut to its exact size. */
const SLAB = 8192;
let slab = Buffer.allocUnsafeSlow(0);
let slabUsed = 0;

/**
 * A string's UTF-8 bytes, packed into a slab with those made before it, for the many small
 * buffers a server keeps for long (the SD entries). Buffer.from()
 * packs small strings into a shared 8 KB pool too, but takes a new pool whenever four bytes
 * a character would not fit (1.4 KB for an SD entry of 360 characters): the SD entries, the
 * largest item a 100k-target server holds (72 MB), took 86 MB of pools. For bytes kept long
 * only: a slab stays while any of its strings lives, so short-lived ones would keep dead
 * bytes beside the long-lived.
 */
export function packedBytes(text: string): Buffer {
  const length = Buffer.byteLength(text);
  if (length > SLAB / 4) return Buffer.from(text);
  if (slabUsed + length > slab.length) {
    slab = Buffer.allocUnsafeSlow(SLAB);
    slabUsed = 0;
  }
  const bytes = slab.subarray(slabUsed, slabUsed + slab.write(text, slabUsed));
  slabUsed += bytes.length;
  return bytes;
}
