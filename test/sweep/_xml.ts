/**
 * A small XML well-formedness check (no parser among the dependencies): one root, tags
 * nested and closed, attributes quoted and not repeated, no stray '<' or '&' in text.
 */
export function assertWellFormedXml(xml: string): void {
  const text = xml.replace(/^\s*<\?xml[^?]*\?>/, '').replace(/<!--[\s\S]*?-->/g, '').replace(/<!\[CDATA\[[\s\S]*?\]\]>/g, '');
  const tag = /<(\/?)([A-Za-z_][\w:.-]*)((?:\s+[A-Za-z_][\w:.-]*\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>/y;
  const attr = /([A-Za-z_][\w:.-]*)\s*=/g;
  const entity = /&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);/y;
  const stack: string[] = [];
  let roots = 0;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '<') {
      tag.lastIndex = i;
      const m = tag.exec(text);
      if (!m) throw new Error(`malformed tag at ${i}: ${text.slice(i, i + 60)}`);
      const [, close, name = '', attrs = '', selfClose] = m;
      if (close) {
        const open = stack.pop();
        if (open !== name) throw new Error(`</${name}> closes <${open ?? 'nothing'}> at ${i}`);
      } else {
        const names = [...attrs.matchAll(attr)].map((a) => a[1]);
        if (new Set(names).size !== names.length) throw new Error(`repeated attribute in <${name}> at ${i}`);
        if (stack.length === 0) roots++;
        if (!selfClose) stack.push(name);
      }
      i = tag.lastIndex;
    } else if (c === '&') {
      entity.lastIndex = i;
      if (!entity.exec(text)) throw new Error(`bare '&' at ${i}`);
      i = entity.lastIndex;
    } else {
      if (stack.length === 0 && !/\s/.test(c ?? '')) throw new Error(`text outside the root at ${i}`);
      i++;
    }
  }
  if (stack.length > 0) throw new Error(`unclosed <${stack.join('>, <')}>`);
  if (roots !== 1) throw new Error(`${roots} root elements`);
}
