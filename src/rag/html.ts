/**
 * HTML to plain text with Markdown headings, enough for indexing a page: scripts, styles and
 * comments go, block elements become paragraph breaks, `<h1>`…`<h6>` become `#` headings (so
 * the Markdown splitter sees the page's sections), list items become `- ` lines, table cells are
 * separated by ` | `, and character references are decoded.
 */

export interface HtmlText {
  /** `<title>`, or the first `<h1>`, or null. */
  title: string | null;
  /** Markdown-like text. */
  text: string;
}

const DROPPED = ['script', 'style', 'noscript', 'template', 'svg', 'iframe', 'object', 'canvas', 'head'];
const BLOCKS = [
  'p', 'div', 'section', 'article', 'main', 'header', 'footer', 'nav', 'aside', 'ul', 'ol', 'table', 'thead', 'tbody',
  'tfoot', 'tr', 'blockquote', 'pre', 'dl', 'dt', 'dd', 'figure', 'figcaption', 'form', 'fieldset', 'address', 'hr',
  'details', 'summary', 'body', 'html',
];
const NEWLINE = '\u0000'; // stands for a newline that survives whitespace collapsing

const NAMED_ENTITIES: Record<string, string> = {
  amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ', ensp: ' ', emsp: ' ', thinsp: ' ', mdash: '—',
  ndash: '–', hellip: '…', middot: '·', bull: '•', laquo: '«', raquo: '»', lsquo: '‘', rsquo: '’', ldquo: '“',
  rdquo: '”', yen: '¥', euro: '€', pound: '£', cent: '¢', copy: '©', reg: '®', trade: '™', deg: '°', times: '×',
  divide: '÷', plusmn: '±', frac12: '½', frac14: '¼', frac34: '¾', sect: '§', para: '¶', iexcl: '¡', iquest: '¿',
};

export function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z][a-z0-9]*);/gi, (whole, ref: string) => {
    if (ref[0] === '#') {
      const code = ref[1] === 'x' || ref[1] === 'X' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
      return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
    }
    return NAMED_ENTITIES[ref.toLowerCase()] ?? whole;
  });
}

function stripTags(s: string): string {
  return decodeEntities(s.replace(/<[^>]*>/g, '')).replace(/\s+/g, ' ').trim();
}

export function htmlToText(html: string): HtmlText {
  let s = html.replace(/<!--[\s\S]*?-->/g, '').replace(/<!\[CDATA\[[\s\S]*?\]\]>/g, '').replace(/<!doctype[^>]*>/gi, '');
  const titleMatch = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(s);
  const h1Match = /<h1[^>]*>([\s\S]*?)<\/h1>/i.exec(s);
  const title = (titleMatch && stripTags(titleMatch[1])) || (h1Match && stripTags(h1Match[1])) || null;

  for (const tag of DROPPED) s = s.replace(new RegExp(`<${tag}\\b[\\s\\S]*?</${tag}\\s*>`, 'gi'), ' ');
  // <pre> keeps its line breaks.
  s = s.replace(/<pre\b[^>]*>([\s\S]*?)<\/pre\s*>/gi, (_, body: string) => `\n\n${body.replace(/\r?\n/g, NEWLINE)}\n\n`);
  s = s.replace(/\s+/g, ' ');
  s = s.replace(/<h([1-6])\b[^>]*>([\s\S]*?)<\/h\1\s*>/gi, (_, level: string, body: string) =>
    `${NEWLINE}${NEWLINE}${'#'.repeat(Number(level))} ${stripTags(body)}${NEWLINE}${NEWLINE}`,
  );
  s = s.replace(/<br\b[^>]*>/gi, NEWLINE);
  s = s.replace(/<li\b[^>]*>/gi, `${NEWLINE}- `);
  s = s.replace(/<\/t[dh]\s*>\s*<t[dh]\b[^>]*>/gi, ' | ');
  s = s.replace(new RegExp(`</?(?:${BLOCKS.join('|')})\\b[^>]*>`, 'gi'), `${NEWLINE}${NEWLINE}`);
  s = s.replace(/<[^>]*>/g, '');
  s = decodeEntities(s).replace(/\u00a0/g, ' ');
  const text = s
    .split(NEWLINE)
    .map((line) => line.replace(/[ \t]+/g, ' ').trim())
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
  return { title, text };
}
