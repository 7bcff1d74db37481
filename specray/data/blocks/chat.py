"""Chat prompts: advice, explanations, writing, opinions, how-to, recommendations, role-play, rewriting."""

from specray.data.blocks.common import join, maybe, pick

SITUATIONS = [
    "I just started a new job and feel overwhelmed", "my roommate never does the dishes",
    "I want to ask for a raise but I'm nervous", "my best friend is moving to another country",
    "I keep procrastinating on my thesis", "I can't fall asleep before 2 a.m.",
    "my teenage son barely talks to me", "I'm thinking about switching careers at 40",
    "I have a job offer from two companies", "my neighbour plays loud music every night",
    "I feel lonely after moving to a new city", "I'm burned out but can't take time off",
    "my team ignores my ideas in meetings", "I want to reconnect with an old friend after years",
    "I'm anxious about public speaking at a wedding", "I spend too much time on my phone",
]
TOPICS = [
    "why the sky is blue", "how vaccines train the immune system", "how a bill becomes law in the United States",
    "what causes inflation", "how photosynthesis works", "why we have seasons", "how the internet routes a message",
    "what black holes are", "how compound interest works", "the causes of the First World War",
    "how airplanes stay in the air", "what a stock market index is", "why bread rises",
    "how noise-cancelling headphones work", "what the placebo effect is", "how glaciers shape landscapes",
    "why cats purr", "how credit scores are calculated", "the difference between weather and climate",
    "how memory works in the human brain", "what the Renaissance changed in Europe", "how solar panels make electricity",
]
AUDIENCES = ["a five-year-old", "a high-school student", "my grandmother", "a busy executive", "someone new to the topic", "an expert"]
WRITING = [
    ("a short poem", ["autumn rain", "a lighthouse keeper", "the first day of school", "city lights at night",
                      "an old dog", "the smell of coffee"]),
    ("a cover letter", ["a junior graphic designer role", "a barista job", "a nursing position", "a summer internship at a museum"]),
    ("a short story", ["a robot who learns to garden", "two strangers stuck in an elevator", "a map that redraws itself",
                       "a town where it never stops snowing"]),
    ("a polite email", ["declining a meeting invitation", "asking my landlord to fix the heating", "following up after a job interview",
                        "asking a professor for an extension"]),
    ("a toast", ["my sister's wedding", "a colleague's retirement", "my parents' 30th anniversary"]),
    ("a product description", ["a handmade ceramic mug", "noise-cancelling headphones", "an eco-friendly water bottle"]),
    ("a blog post introduction", ["minimalist living", "learning to cook at 30", "travelling on a budget in Southeast Asia"]),
    ("a limerick", ["a forgetful wizard", "a cat who hates Mondays", "a very slow snail"]),
    ("a speech", ["the opening of a community garden", "a high-school graduation", "a charity fundraiser"]),
]
TONES = ["", "", "funny", "heartfelt", "formal", "casual", "inspiring", "melancholic"]
HOWTOS = [
    "start running if I've never exercised", "make a sourdough starter", "prepare for a job interview",
    "negotiate the price of a used car", "keep houseplants alive", "learn a new language as an adult",
    "set up a monthly budget", "write a good resume", "get better at remembering names", "plan a trip to Japan",
    "clean a cast-iron pan", "build a morning routine", "study effectively for exams", "start a vegetable garden on a balcony",
    "make friends as an adult", "give constructive feedback to a coworker", "train a puppy to sit", "meditate",
    "reduce food waste at home", "host a dinner party for ten people",
]
OPINIONS = [
    "Is remote work better than working in an office?", "Should schools ban smartphones?",
    "Is it worth learning Latin today?", "Are e-books better than paper books?",
    "Should I buy or rent a home in my thirties?", "Is social media good or bad for teenagers?",
    "Is a four-day work week a good idea?", "What makes a good leader?", "Are zoos ethical?",
    "Is it better to specialise or be a generalist?", "Should tipping be abolished?",
    "What's more important in a job: salary or meaning?",
]
RECS = [
    "books for someone who loved The Hobbit", "podcasts about history", "board games for a family with young kids",
    "a weekend itinerary for Lisbon", "vegetarian dinners that take under 30 minutes", "movies like Spirited Away",
    "gifts for a dad who likes fishing", "hobbies I can do at home in winter", "albums to get into jazz",
    "exercises for lower back pain", "things to do in Montreal on a rainy day", "easy houseplants for a dark apartment",
]
ROLES = [
    ("a medieval innkeeper", "greet a tired traveller"), ("a tour guide in ancient Rome", "describe the Forum"),
    ("a friendly librarian", "help me pick my next book"), ("a detective in 1920s London", "question a suspect"),
    ("a personal trainer", "motivate me to finish my workout"), ("a ship captain", "announce a storm to the crew"),
    ("a job interviewer", "ask me questions for a marketing role"), ("Shakespeare", "comment on modern texting"),
]
REWRITES = [
    "Hey, can't make it tomorrow, something came up, sorry.",
    "The meeting was unproductive because people did not prepare and the agenda was unclear.",
    "Our product is good and people like it and it is cheap.",
    "I think maybe we should possibly consider looking into other options at some point.",
    "Dear team, pls send reports asap thx.",
    "The results were bad. We failed. Next quarter will be better hopefully.",
]
COMPARE = [
    ("a Kindle", "a Kobo"), ("Spain", "Portugal for a first trip to Europe"), ("yoga", "pilates"),
    ("a gas stove", "an induction cooktop"), ("living in a big city", "a small town"), ("cats", "dogs as pets"),
    ("studying abroad", "studying at home"), ("a road bike", "a hybrid bike"),
]
OPENERS = ["", "", "", "Hi!", "Hello!", "Hey there.", "Quick question:", "Hi, hoping you can help."]


def _advice(rng):
    s = pick(rng, SITUATIONS)
    ask = pick(rng, ["What should I do?", "Any advice?", "How can I handle this?", "What would you suggest?",
                     "How do I talk to them about it?"])
    return join(pick(rng, OPENERS), s[0].upper() + s[1:] + ".", ask)


def _explain(rng):
    t, a = pick(rng, TOPICS), pick(rng, AUDIENCES)
    return pick(rng, [f"Explain {t} to {a}.", f"Can you explain {t} in simple terms?", f"I've always wondered {t}. Could you explain?",
                      f"In a few paragraphs, describe {t}.", f"Give me a short explanation of {t}, suitable for {a}."])


def _write(rng):
    kind, subjects = pick(rng, WRITING)
    tone = pick(rng, TONES)
    lead = f"{'an' if tone[0] in 'aeiou' else 'a'} {tone} {kind.split(' ', 1)[1]}" if tone else kind
    return join(pick(rng, ["Write", "Please write", "Could you draft", "Help me write"]), f"{lead} about {pick(rng, subjects)}.",
                maybe(rng, pick(rng, ["Keep it under 150 words.", "Make it rhyme.", "Use vivid imagery.", "Keep it short."]), 0.4))


def _howto(rng):
    h = pick(rng, HOWTOS)
    return join(pick(rng, OPENERS), pick(rng, [f"How do I {h}?", f"What's the best way to {h}?", f"Can you give me tips to {h}?",
                                               f"Give me a step-by-step plan to {h}.", f"I'd like to {h}. Where do I start?"]))


def _opinion(rng):
    return join(pick(rng, OPENERS), pick(rng, OPINIONS),
                maybe(rng, pick(rng, ["Give me both sides.", "What do you think?", "Be honest.", "Keep it balanced."]), 0.6))


def _recommend(rng):
    r = pick(rng, RECS)
    return join(pick(rng, OPENERS), pick(rng, [f"Can you recommend {r}?", f"Suggest some {r}.", f"I'm looking for {r}. Any ideas?"]),
                maybe(rng, "Briefly say why for each.", 0.4))


def _roleplay(rng):
    role, task = pick(rng, ROLES)
    return f"Pretend you are {role}. {task[0].upper() + task[1:]}." + maybe(rng, " Stay in character.", 0.5)


def _rewrite(rng):
    text = pick(rng, REWRITES)
    how = pick(rng, ["more professional", "friendlier", "more concise", "more persuasive", "sound confident"])
    return f"Rewrite this to be {how}: \"{text}\""


def _compare(rng):
    a, b = pick(rng, COMPARE)
    return join(pick(rng, OPENERS), f"Should I choose {a} or {b}? What are the pros and cons?")


def _summarise(rng):
    t = pick(rng, TOPICS)
    return pick(rng, [f"Summarise in three bullet points {t}.", f"Give me a TL;DR of {t}.",
                      f"What are the key facts I should know about {t}?"])


def _feelings(rng):
    return pick(rng, ["I had a really rough day and just need to vent for a minute.",
                      "I failed my driving test again. I feel so stupid.",
                      "My cat died last week and the house feels empty.",
                      "I got the job!!! I can't believe it. Help me celebrate and plan my first week.",
                      "I feel like everyone my age is ahead of me in life.",
                      "Is it normal to feel sad after finishing a big project?"])


def _trivia(rng):
    return pick(rng, ["Who painted the ceiling of the Sistine Chapel?", "What are some fun facts about octopuses?",
                      "Tell me something interesting about the history of tea.", "Why do we say 'bless you' when someone sneezes?",
                      "What was daily life like in ancient Egypt?", "What's the origin of Halloween?",
                      "Which languages are the hardest for English speakers to learn, and why?",
                      "Tell me about the life of Marie Curie."])


def _names(rng):
    thing = pick(rng, ["a bakery that specialises in rye bread", "a golden retriever puppy", "a podcast about urban gardening",
                       "a fantasy kingdom by the sea", "a productivity app", "a book club that reads only mysteries"])
    return f"Give me {rng.randint(5, 12)} name ideas for {thing}."


def _plan(rng):
    what = pick(rng, ["a surprise birthday party for my partner", "a 3-day hiking trip", "a week of healthy meals",
                      "a study schedule for the next month", "a team-building afternoon for 15 people", "a cozy reading weekend"])
    return join(pick(rng, OPENERS), f"Help me plan {what}.", maybe(rng, f"My budget is about ${rng.choice([50, 100, 300, 800])}.", 0.5))


DISTILL = [_advice, _explain, _write, _howto, _opinion, _recommend, _roleplay, _rewrite, _compare, _summarise,
           _feelings, _trivia, _names, _plan]

H_TOPICS = ["how tides are caused by the moon", "why the Roman Empire declined", "how bees communicate",
            "what jet lag does to the body", "how a refrigerator keeps food cold", "the history of the printing press",
            "why some people are left-handed", "how coral reefs form", "how hurricanes get their names",
            "why music gives us chills", "how the Silk Road shaped trade", "what sleep does for learning"]
H_GENRES = ["a haiku sequence about mountain fog", "a bedtime story about a shy dragon", "a thank-you note to a nurse",
            "a wedding invitation for a beach ceremony", "a motivational message for a marathon runner",
            "a travel diary entry from Marrakech", "an apology letter to a neighbour whose fence I damaged",
            "a farewell message for a colleague moving abroad"]
H_DILEMMAS = ["My coworker takes credit for my work", "My sister wants to borrow a large sum of money",
              "I was invited to two weddings on the same day", "My partner wants to adopt a dog but I'm allergic",
              "My manager asked me to work every weekend this month", "My friend keeps cancelling plans at the last minute",
              "My parents disapprove of my choice of university", "A close friend asked me to be honest about her business idea"]


def _h_essay(rng):
    return f"I'm curious about {pick(rng, H_TOPICS)}. Could you tell me more in plain language?"


def _h_create(rng):
    return f"Compose {pick(rng, H_GENRES)}. {pick(rng, ['Make it warm.', 'Keep it brief.', 'Use a gentle tone.', ''])}".strip()


def _h_dilemma(rng):
    return f"{pick(rng, H_DILEMMAS)}. How would you approach this conversation?"


def _h_debate(rng):
    side = pick(rng, ["city life", "working from cafés", "learning piano as an adult", "handwritten letters", "long train journeys",
                      "owning fewer clothes", "taking a gap year", "public libraries in the digital age"])
    return f"Make the strongest case you can for {side}, then the strongest case against it."


def _h_guide(rng):
    place = pick(rng, ["Kyoto", "Patagonia", "the Scottish Highlands", "Istanbul", "Vancouver Island", "Cartagena"])
    return f"I'm visiting {place} for {rng.randint(2, 10)} days. What should I not miss, and what should I skip?"


HELDOUT = [_h_essay, _h_create, _h_dilemma, _h_debate, _h_guide]
