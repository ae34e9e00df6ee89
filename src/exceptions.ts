// --exceptions FILE: recipients that are never greylisted (postmaster@, abuse@, a full
// address, a whole domain). One entry per line, `#` starts a comment:
//
//   postmaster@            this local part at every domain
//   abuse@example.org      this one address
//   @example.org           every address at this domain
//   @.example.org          every address at any subdomain of it (not the domain itself)
//
// Matching ignores ASCII case, as the triplet key does. A recipient with no `@` (qmail-smtpd
// sends such a local recipient as typed) matches only local-part entries.
import { readFileSync } from 'node:fs';
import { QgreydError } from './errors.js';

export interface ExceptionEntry {
  file: string;
  line: number;
  /** the line's text without comment and surrounding blanks */
  text: string;
}

export class ExceptionsError extends QgreydError {
  constructor(message: string) {
    super('QGREYD_BAD_EXCEPTIONS', message);
  }
}

const LOCAL = /^[^\s@]+$/;
const DOMAIN = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

export class Exceptions {
  private readonly locals = new Map<string, ExceptionEntry>();
  private readonly addresses = new Map<string, ExceptionEntry>();
  private readonly domains = new Map<string, ExceptionEntry>();
  private readonly subdomains = new Map<string, ExceptionEntry>();
  readonly entries: ExceptionEntry[] = [];

  constructor(readonly file: string | null = null) {}

  static empty(): Exceptions {
    return new Exceptions(null);
  }

  /** Reads and parses a file; throws ExceptionsError naming file:line for a bad line. */
  static load(file: string): Exceptions {
    let text: string;
    try {
      text = readFileSync(file, 'latin1');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new ExceptionsError(`exceptions ${file}: cannot read it (${err.code ?? err.message}); give a readable file with --exceptions`);
    }
    return Exceptions.parse(text, file);
  }

  static parse(text: string, file: string): Exceptions {
    const ex = new Exceptions(file);
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const hash = lines[i].indexOf('#');
      const body = (hash >= 0 ? lines[i].slice(0, hash) : lines[i]).trim();
      if (body === '') continue;
      const entry: ExceptionEntry = { file, line: i + 1, text: body };
      const lower = body.toLowerCase();
      const at = lower.indexOf('@');
      const bad = (why: string): never => {
        throw new ExceptionsError(`exceptions ${file}:${i + 1}: ${JSON.stringify(body)} ${why}; write postmaster@, user@example.org, @example.org or @.example.org`);
      };
      if (at < 0 || lower.indexOf('@', at + 1) >= 0) bad('needs exactly one @');
      const local = lower.slice(0, at);
      const domain = lower.slice(at + 1);
      if (local === '' && domain === '') bad('names nothing');
      if (local !== '' && !LOCAL.test(local)) bad('has a blank in the local part');
      if (local === '') {
        const sub = domain.startsWith('.');
        const name = sub ? domain.slice(1) : domain;
        if (!DOMAIN.test(name)) bad('is not a domain name');
        (sub ? ex.subdomains : ex.domains).set(name, entry);
      } else if (domain === '') {
        ex.locals.set(local, entry);
      } else {
        if (!DOMAIN.test(domain)) bad('is not an address (bad domain)');
        ex.addresses.set(`${local}@${domain}`, entry);
      }
      ex.entries.push(entry);
    }
    return ex;
  }

  get size(): number {
    return this.entries.length;
  }

  /** The entry a recipient (spaces already removed) matches, or undefined. */
  match(recipient: string): ExceptionEntry | undefined {
    if (this.entries.length === 0) return undefined;
    const r = recipient.toLowerCase();
    const at = r.lastIndexOf('@');
    if (at < 0) return this.locals.get(r);
    const hit = this.addresses.get(r) ?? this.locals.get(r.slice(0, at));
    if (hit) return hit;
    let domain = r.slice(at + 1);
    const exact = this.domains.get(domain);
    if (exact) return exact;
    for (let dot = domain.indexOf('.'); dot >= 0; dot = domain.indexOf('.')) {
      domain = domain.slice(dot + 1);
      const sub = this.subdomains.get(domain);
      if (sub) return sub;
    }
    return undefined;
  }
}
