import { z } from 'zod';

/** Rows per page: a page renders this many, whatever the size of the fleet. */
export const PAGE_SIZE = 100;

/** A page number from the query: a whole number from 1 (default 1). */
export const pageNumber = z.preprocess((v) => (v === '' ? undefined : v), z.coerce.number().int('must be a whole number').min(1, 'must be at least 1').max(1_000_000).default(1));

/** One page of `items`; a page past the end shows the last one. */
export function paged<T>(items: T[], page: number, size = PAGE_SIZE): { items: T[]; page: number; pages: number } {
  const pages = Math.max(1, Math.ceil(items.length / size));
  const current = Math.min(page, pages);
  return { items: items.slice((current - 1) * size, current * size), page: current, pages };
}
