"""Open-ended requests: explanations across every field, writing, role-play, extraction, analysis, advice."""

from specray.data.blocks.common import pick

SUBJECTS = {
    "physics": ["gravity", "friction", "the speed of light", "nuclear fusion", "magnetism", "entropy", "sound waves",
                "buoyancy", "electric circuits", "the photoelectric effect", "special relativity", "radioactivity"],
    "chemistry": ["chemical bonds", "acids and bases", "catalysts", "oxidation", "the periodic table", "polymers",
                  "combustion", "crystals", "isotopes", "electrolysis"],
    "biology": ["DNA replication", "the immune system", "cell division", "ecosystems", "evolution", "the nervous system",
                "enzymes", "pollination", "hormones", "gut bacteria", "migration of birds", "animal camouflage"],
    "earth science": ["plate tectonics", "volcanoes", "the water cycle", "earthquakes", "ocean currents", "erosion",
                      "the ozone layer", "monsoons", "deserts", "permafrost"],
    "astronomy": ["black holes", "the life cycle of stars", "exoplanets", "the Big Bang", "solar eclipses", "comets", "the Moon's phases"],
    "history": ["the French Revolution", "the Silk Road", "the Cold War", "the Roman Republic", "the Ottoman Empire",
                "the Meiji Restoration", "the Harlem Renaissance", "ancient Mesopotamia", "the Byzantine Empire",
                "the civil rights movement", "the Aztec Empire", "the Reformation", "the Space Race", "the Mughal Empire"],
    "economics": ["interest rates", "globalisation", "monopolies", "unemployment", "trade deficits", "cryptocurrency",
                  "minimum wage laws", "the gig economy", "central banks", "tariffs", "recessions"],
    "philosophy": ["utilitarianism", "stoicism", "existentialism", "free will", "the trolley problem", "Kant's ethics",
                   "the social contract", "Confucian ethics", "the mind-body problem"],
    "arts": ["Impressionism", "Baroque music", "film noir", "the Bauhaus movement", "jazz improvisation", "street art",
             "haiku", "Greek tragedy", "Renaissance sculpture", "hip-hop culture"],
    "society": ["urbanisation", "remote work", "social media", "climate migration", "universal basic income",
                "public transport", "aging populations", "online privacy", "fast fashion", "tourism"],
    "health": ["sleep hygiene", "intermittent fasting", "mental health at work", "vitamin D", "strength training",
               "screen time for children", "hydration", "seasonal allergies"],
    "technology": ["artificial intelligence", "self-driving cars", "5G networks", "renewable energy storage",
                   "3D printing", "blockchain", "virtual reality", "smart homes", "satellites"],
}
VERBS = ["Explain", "Describe", "Discuss", "Outline", "Give an overview of", "Summarize what is known about",
         "Write a short essay on", "Tell me about", "Provide insights into", "Help me understand"]
ANGLES = ["", "", "Use simple language.", "Include two real-world examples.", "List three key points.",
          "Keep it under 200 words.", "What are the main debates around it?", "Why does it matter today?",
          "How has our understanding changed over time?", "Compare it with a related idea.",
          "Use an analogy a child could follow.", "Structure the answer with headings."]
GENRES = ["poem", "short story", "blog post", "travel blog post", "persuasive essay", "speech", "letter",
          "product review", "press release", "diary entry", "newsletter", "song", "dialogue", "fairy tale",
          "movie pitch", "social media post", "advertisement", "eulogy", "op-ed", "haiku", "sonnet", "recipe introduction"]
THEMES = ["a trip to the mountains", "friendship", "a rainy Sunday", "the first snow", "a lost wallet", "moving house",
          "a family reunion", "a mysterious stranger", "the last day of summer", "learning to swim", "an old bookshop",
          "a city at dawn", "a robot learning emotions", "a forgotten garden", "a sports victory", "a new job",
          "a village festival", "the ocean", "a childhood memory", "a dragon who is afraid of fire", "a space voyage"]
PERSONAS = ["a pirate captain", "a medieval knight", "a weather forecaster", "a tour guide in Paris", "a detective",
            "a kindergarten teacher", "a news anchor", "Sherlock Holmes", "a startup founder", "a park ranger",
            "a flight attendant", "a fitness coach", "a therapist", "a museum curator", "an alien visiting Earth",
            "a sommelier", "a stand-up comedian", "a travel agent", "a Victorian butler", "a sports commentator",
            "an English translator", "a machine learning engineer explaining ideas to beginners", "a mathematician and poet",
            "a doctor", "a relationship coach", "a marketing strategist", "a debate moderator", "a character from a fantasy novel"]
PERSONA_TASKS = ["introduce yourself", "describe your typical day", "give me advice on my career",
                 "explain your job to a child", "react to today's news", "welcome guests to an event",
                 "answer questions from a curious student", "recommend something for my weekend"]
TEXTS = [
    "The festival, held in Edinburgh each August, attracted 3,000 performers and 250,000 visitors this year, "
    "according to organiser Fiona Grant.",
    "Maria Lopez, CEO of Brightwave, announced on Tuesday that the company will open offices in Nairobi and Jakarta next spring.",
    "Review 1: The hotel was spotless and the staff friendly. Review 2: Noisy rooms and a slow check-in. "
    "Review 3: Decent value for the price.",
    "In 1869 the Suez Canal opened, shortening the sea route between Europe and Asia by about 7,000 kilometres.",
    "Our quarterly sales rose 12% in Europe, fell 3% in Asia, and stayed flat in the Americas.",
    "Dr. Amina Yusuf of the University of Lagos published a study on malaria vaccines in The Lancet in March.",
    "The novel follows Ana, a young violinist in Vienna, who discovers her grandfather's letters from 1938.",
]
EXTRACT_ASKS = ["extract all people, places and organisations", "identify the main claim and the supporting evidence",
                "summarise it in one sentence", "list every number and what it refers to",
                "classify the sentiment as positive, negative or mixed", "return the key facts as JSON",
                "rewrite it in plain English", "suggest a headline", "translate it into French",
                "turn it into three quiz questions"]
CONVERSATIONAL = [
    "What's your favourite season and why?", "Tell me a joke about cats.", "Can you help me pick a name for my band?",
    "I'm bored. What should I do this evening?", "What do you think makes a good friend?",
    "Could you recommend a good novel for a long flight?", "What are some fun things to do with kids on a rainy day?",
    "Any tips for staying motivated while working from home?", "How do I politely say no to extra work?",
    "What should I pack for a week-long beach holiday?", "What is a good gift for a coworker who is leaving?",
    "How can I make my small apartment feel cosier?", "What's the etiquette for tipping in Japan?",
    "Can you suggest a theme for my daughter's birthday party?", "How do I start journaling?",
]
RECORDS = [
    ("company results", "a) Orion Ltd, CEO Paula Diaz, revenue $40 million, profit $6 million in 2022. b) Vega Inc, CEO Sam Ortiz, "
     "revenue $95 million, profit $4 million in 2022. c) Lyra Co, CEO Mei Tan, revenue $12 million, profit $3 million."),
    ("daily temperatures", "2023-03-01: high 14, low 3. 2023-03-02: high 17, low 6. 2023-04-01: high 21, low 9. 2023-04-02: high 19, low 8."),
    ("book reviews", "1. 'A slow start, but the ending left me in tears.' 2. 'Flat characters and a predictable plot.' "
     "3. 'Absolutely loved it, I read it in one night.'"),
    ("restaurant ratings", "Trattoria Sole: food 4.5, service 3, price $$. Blue Lotus: food 4, service 5, price $$$. Taco Loco: food 3.5, service 4, price $."),
    ("sentences", "a) Oslo, the capital of Norway, is where people mostly speak Norwegian. b) In Lima, Peruvians speak Spanish and Quechua."),
    ("a news snippet", "On Monday, the city council of Valencia approved a 2 million euro plan with GreenRoute to add 40 km of bike lanes."),
]
RECORD_ASKS = ["identify the best and the worst, and explain why", "extract the key facts and output them in JSON format",
               "rate each on a scale of 1 to 5 and return the ratings as a list", "summarise the trend in two sentences",
               "list the named entities (people, organisations, places)", "put the information into a table",
               "return the results as a JSON string with one line per item", "point out anything surprising"]
CRITIQUE = ["Evaluate the strengths and weaknesses of", "Give a balanced assessment of", "Critique",
            "What are the pros and cons of", "Analyze the impact of", "Assess the role of"]


def _explain(rng):
    field = pick(rng, list(SUBJECTS))
    return f"{pick(rng, VERBS)} {pick(rng, SUBJECTS[field])}. {pick(rng, ANGLES)}".strip()


def _field_question(rng):
    field = pick(rng, list(SUBJECTS))
    topic = pick(rng, SUBJECTS[field])
    return pick(rng, [f"In the field of {field}, what is meant by {topic}?", f"How does {topic} work?",
                      f"Why is {topic} important?", f"What are the most common misconceptions about {topic}?",
                      f"How would you teach {topic} to a class of twelve-year-olds?",
                      f"What role did {topic} play in shaping the modern world?"])


def _compose(rng):
    genre, theme = pick(rng, GENRES), pick(rng, THEMES)
    verb = pick(rng, ["Write", "Compose", "Draft", "Create", "Craft"])
    extra = pick(rng, ["", "", "Make it funny.", "Use vivid imagery.", "Keep it under 120 words.",
                       "Write it for a teenage audience.", "End with a twist.", "Use a nostalgic tone."])
    return f"{verb} a {genre} about {theme}. {extra}".strip()


def _persona(rng):
    return f"{pick(rng, ['Pretend you are', 'Act as', 'Imagine you are', 'Take on the role of', 'You are now'])} " \
           f"{pick(rng, PERSONAS)}. {pick(rng, PERSONA_TASKS).capitalize()}."


def _extract(rng):
    return f"Read the text below and {pick(rng, EXTRACT_ASKS)}.\n\n{pick(rng, TEXTS)}"


def _records(rng):
    kind, text = pick(rng, RECORDS)
    return f"{pick(rng, ['Given the following', 'Here are some', 'Analyze the following', 'Consider these'])} {kind}, " \
           f"{pick(rng, RECORD_ASKS)}:\n{text}"


def _open_question(rng):
    field = pick(rng, list(SUBJECTS))
    topic = pick(rng, SUBJECTS[field])
    other = pick(rng, [t for t in SUBJECTS[field] if t != topic])
    return pick(rng, [f"Which factors contributed to {topic}?", f"What were the main consequences of {topic}?",
                      f"What are the differences between {topic} and {other}?", f"Who are the key figures associated with {topic}?",
                      f"What can {topic} teach us about {pick(rng, ['leadership', 'resilience', 'change', 'cooperation'])}?",
                      f"What are the main achievements and failures of {topic}?", f"How is {topic} viewed differently around the world?"])


def _critique(rng):
    field = pick(rng, list(SUBJECTS))
    return f"{pick(rng, CRITIQUE)} {pick(rng, SUBJECTS[field])} on {pick(rng, ['society', 'everyday life', 'the economy', 'young people', 'the environment', 'culture'])}."


def _conversational(rng):
    return pick(rng, CONVERSATIONAL)


def _edit(rng):
    text = pick(rng, ["Me and him goes to the store yesterday and buyed some apple.",
                      "Their going to announce the winners tomorow, so make sure your there.",
                      "The report, which was long, and boring, was read by nobody at the meeting that was held.",
                      "We are pleased to informing you that you application has been accepted."])
    return f"{pick(rng, ['Correct the grammar in', 'Edit and polish', 'Proofread', 'Improve the style of'])} this sentence: \"{text}\""


def _lesson(rng):
    field = pick(rng, list(SUBJECTS))
    return f"Create a lesson plan for {pick(rng, ['middle school', 'high school', 'adult learners', 'university freshmen'])} " \
           f"about {pick(rng, SUBJECTS[field])}. Include activities and a short homework assignment."


def _compare_ideas(rng):
    field = pick(rng, list(SUBJECTS))
    a, b = rng.sample(SUBJECTS[field], 2)
    return f"Compare and contrast {a} and {b}."


TEMPLATES = [_explain, _field_question, _compose, _persona, _extract, _records, _open_question, _critique, _conversational,
             _edit, _lesson, _compare_ideas]
