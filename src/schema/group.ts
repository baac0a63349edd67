import { z } from 'zod';
import { labels, printable, slug, text } from './common.js';

/** groups/<id>.yaml */
export const groupFile = z.strictObject({
  id: slug,
  name: printable(200).min(1, 'must not be empty'),
  namespace: slug,
  parent: slug.nullish(),
  description: text(2000).optional(),
  labels: labels.default({}),
});

export type Group = z.infer<typeof groupFile>;
